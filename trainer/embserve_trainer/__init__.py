"""embserve trainer: learn, import, evaluate and export embedding tables as bundles."""

__version__ = "0.1.0"
