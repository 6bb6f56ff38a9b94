"""What the examples share: the generated stubs and a channel to a node.

The stubs (api_pb2, api_pb2_grpc, broker_pb2, records_pb2) are generated
by the build into <build>/python from runtime/wire/*.proto; EDDA_STUBS
names that directory. EDDA_API is the node's client door (host:port,
default 127.0.0.1:7430); EDDA_TOKEN, if set, is sent as a bearer token.
"""
import os
import sys

sys.path.insert(0, os.environ.get("EDDA_STUBS", "build/python"))
import grpc  # noqa: E402  (Debian: python3-grpcio)
import api_pb2  # noqa: E402,F401
import api_pb2_grpc  # noqa: E402
import broker_pb2  # noqa: E402,F401


def connect():
    """A stub of edda.api.v1.Edda and the call metadata (the token)."""
    channel = grpc.insecure_channel(os.environ.get("EDDA_API", "127.0.0.1:7430"))
    token = os.environ.get("EDDA_TOKEN")
    metadata = [("authorization", "Bearer " + token)] if token else []
    return api_pb2_grpc.EddaStub(channel), metadata
