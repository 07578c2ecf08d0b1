"""embserve server: serves embedding table bundles over gRPC from FAISS indexes."""

__version__ = "0.1.0"
