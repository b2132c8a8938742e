"""gRPC reflection answers on ``grpc.reflection.v1`` (what current grpcurl asks for first) as well as on
``v1alpha``. The v1 client here is built from v1's own reflection.proto (below, as published by gRPC),
compiled at test time into a private descriptor pool: nothing of the server's code is reused."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from facenas.rpc.client import make_channel
from facenas.rpc.server import RunningServer, ServerConfig, start
from services.store import server as store_server

#: grpc/reflection/v1/reflection.proto (gRPC's, comments left out)
V1_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest { string containing_type = 1; int32 extension_number = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse { string base_type_name = 1; repeated int32 extension_number = 2; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v1's request and response classes, from a descriptor pool of their own."""
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("v1")
    (root / "grpc/reflection/v1").mkdir(parents=True)
    (root / "grpc/reflection/v1/reflection.proto").write_text(V1_PROTO)
    out = root / "reflection.pb"
    argv = ["protoc", f"-I{root}", f"--descriptor_set_out={out}", "grpc/reflection/v1/reflection.proto"]
    assert protoc.main(argv) == 0, f"{sys.executable} grpc_tools.protoc failed"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The store service as `python -m services.store` wires it, on SQLite."""
    db = tmp_path_factory.mktemp("store") / "s.db"
    registrations, close, _probes = store_server.build(
        store_server.parser().parse_args(["--url", f"sqlite:///{db}"])
    )
    running = start(registrations, ServerConfig(metrics_port=None))
    try:
        yield running
    finally:
        running.stop(0)
        close()


def _ask_v1(address: str, v1: dict[str, Any], **request: str) -> Any:
    with make_channel(address) as channel:
        method = channel.stream_stream(
            V1_METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=v1["ServerReflectionResponse"].FromString,
        )
        (reply,) = list(method(iter([v1["ServerReflectionRequest"](**request)]), timeout=10))
    return reply


def test_v1_lists_every_service(store: RunningServer, v1: dict[str, Any]) -> None:
    reply = _ask_v1(store.address, v1, list_services="")
    names = {s.name for s in reply.list_services_response.service}
    assert {"facenas.v1.Store", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


def test_v1_describes_a_service_with_its_dependencies(store: RunningServer, v1: dict[str, Any]) -> None:
    reply = _ask_v1(store.address, v1, file_containing_symbol="facenas.v1.Store")
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in reply.file_descriptor_response.file_descriptor_proto
    ]
    (store_file,) = [f for f in files if f.name == "facenas/v1/store.proto"]
    assert "PutEvaluation" in {m.name for m in store_file.service[0].method}
    # grpcurl describes the reflection service itself too
    reply = _ask_v1(store.address, v1, file_containing_symbol="grpc.reflection.v1.ServerReflection")
    (file,) = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert file.package == "grpc.reflection.v1"
    assert file.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


def test_v1_reports_an_unknown_symbol_as_not_found(store: RunningServer, v1: dict[str, Any]) -> None:
    reply = _ask_v1(store.address, v1, file_containing_symbol="no.such.Service")
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1alpha_still_answers(store: RunningServer) -> None:
    with make_channel(store.address) as channel:
        stub = v1alpha_grpc.ServerReflectionStub(channel)
        request = v1alpha_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert "facenas.v1.Store" in {s.name for s in reply.list_services_response.service}


def test_no_reflection_means_neither_version(tmp_path: Path, v1: dict[str, Any]) -> None:
    args = store_server.parser().parse_args(["--url", f"sqlite:///{tmp_path / 's.db'}"])
    registrations, close, _probes = store_server.build(args)
    running = start(registrations, ServerConfig(metrics_port=None, reflection=False))
    try:
        with pytest.raises(grpc.RpcError) as raised:
            _ask_v1(running.address, v1, list_services="")
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop(0)
        close()
