"""Generated gRPC/protobuf code for the facenas.v1 API (``make protos``); do not edit."""
