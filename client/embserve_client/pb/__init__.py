"""Generated protobuf/gRPC code for embserve.v1 (do not edit; run proto/generate.sh)."""

from embserve_client.pb.embserve.v1 import embserve_pb2, embserve_pb2_grpc

__all__ = ["embserve_pb2", "embserve_pb2_grpc"]
