"""Server reflection that serves the contract as written, comments included.

grpc_reflection's servicer answers from the process's descriptor pool, which the generated Python
stubs fill with descriptors that carry no SourceCodeInfo: `grpcurl describe` then shows no
comments. `make proto` also writes `parley/v1/parley.binpb`, a FileDescriptorSet of proto/ built
with `--include_imports --include_source_info` (so it holds google/protobuf/*.proto too). This
servicer answers `file_by_filename`, `file_containing_symbol` and the extension queries from that
set, and falls back to grpc_reflection's default answers for everything outside it
(grpc.health.v1, the reflection service itself). Each file is served as the compiled-in stubs
describe it (the same descriptor as before, JSON names included) plus the set's source info.

Only grpc.reflection.v1alpha is served: grpcio-reflection 1.85.1 ships no v1 service. grpcurl and
`buf curl` use v1alpha when v1 is not there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

log = logging.getLogger("parleyd.reflection")

# Where `make proto` puts the descriptor set: beside the generated stubs, in the `parley` package.
DESCRIPTOR_SET_PACKAGE = "parley.v1"
DESCRIPTOR_SET_NAME = "parley.binpb"

REFLECTION_SERVICE_NAME: str = reflection.SERVICE_NAME


@functools.cache
def _descriptor_set_bytes(package: str, name: str) -> bytes | None:
    try:
        return resources.files(package).joinpath(name).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return None


def load_descriptor_set(
    package: str = DESCRIPTOR_SET_PACKAGE, name: str = DESCRIPTOR_SET_NAME
) -> descriptor_pb2.FileDescriptorSet | None:
    """The FileDescriptorSet installed with the generated stubs, or None when it is absent."""
    data = _descriptor_set_bytes(package, name)
    if data is None:
        return None
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def _clear_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    def walk(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in (*message.field, *message.extension):
                field.ClearField("json_name")
            walk(message.nested_type)

    for field in file.extension:
        field.ClearField("json_name")
    walk(file.message_type)


def _as_served(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The file as the compiled-in stubs describe it, with the set's source info added.

    The stubs are what the server speaks, so they stay the truth: protoc's descriptor set also
    fills in every `json_name`, which the Python stubs leave out for parley's own files, and
    grpcurl would then print lowerCamelCase JSON instead of the proto field names it prints today.
    A set that describes anything else than the stubs (stale generated/) is not served.
    """
    try:
        compiled = descriptor_pool.Default().FindFileByName(file.name)
    except KeyError:
        return file  # not loaded by this process: the set is all there is
    stub = descriptor_pb2.FileDescriptorProto()
    compiled.CopyToProto(stub)
    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    ours.CopyFrom(file)
    ours.ClearField("source_code_info")
    theirs.CopyFrom(stub)
    _clear_json_names(ours)
    _clear_json_names(theirs)
    if ours != theirs:
        log.warning(
            "descriptor set: %s differs from the generated stubs (run `make proto`): "
            "reflection serves it without comments",
            file.name,
        )
        return stub
    stub.source_code_info.CopyFrom(file.source_code_info)
    return stub


def _symbols_of(file: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    """Every fully-qualified name a file defines: types, fields, oneofs, enum values, services and
    methods (upb's FindFileContainingSymbol finds no methods; grpcurl asks for them)."""
    prefix = f"{file.package}." if file.package else ""

    def enum(e: descriptor_pb2.EnumDescriptorProto, scope: str) -> Iterator[str]:
        yield f"{scope}{e.name}"
        # Enum values are siblings of their enum (C++ scoping rules).
        yield from (f"{scope}{v.name}" for v in e.value)

    def message(m: descriptor_pb2.DescriptorProto, scope: str) -> Iterator[str]:
        name = f"{scope}{m.name}"
        yield name
        inner = f"{name}."
        yield from (f"{inner}{f.name}" for f in (*m.field, *m.extension))
        yield from (f"{inner}{o.name}" for o in m.oneof_decl)
        for nested in m.nested_type:
            yield from message(nested, inner)
        for e in m.enum_type:
            yield from enum(e, inner)

    for m in file.message_type:
        yield from message(m, prefix)
    for e in file.enum_type:
        yield from enum(e, prefix)
    yield from (f"{prefix}{x.name}" for x in file.extension)
    for service in file.service:
        yield f"{prefix}{service.name}"
        yield from (f"{prefix}{service.name}.{method.name}" for method in service.method)


class DescriptorSetReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha answered from a FileDescriptorSet first, the default pool second."""

    def __init__(
        self, service_names: Iterable[str], file_set: descriptor_pb2.FileDescriptorSet
    ) -> None:
        super().__init__(service_names)
        self._serialized: dict[str, bytes] = {}
        self._dependencies: dict[str, tuple[str, ...]] = {}
        self._files_by_symbol: dict[str, str] = {}
        # The set as a pool, for the extension queries.
        self._symbols = descriptor_pool.DescriptorPool()
        for file in file_set.file:
            missing = [dep for dep in file.dependency if dep not in self._serialized]
            if missing:
                # protoc --include_imports lists every file after its dependencies.
                raise ValueError(
                    f"descriptor set: {file.name} imports {missing}, which are not before it "
                    "in the set (build it with --include_imports)"
                )
            served = _as_served(file)
            serialized = served.SerializeToString(deterministic=True)
            self._symbols.AddSerializedFile(serialized)
            for symbol in _symbols_of(served):
                self._files_by_symbol.setdefault(symbol, served.name)
            self._serialized[file.name] = serialized
            self._dependencies[file.name] = tuple(file.dependency)

    def _files_response(self, request: Any, filename: str) -> Any:
        """The file, then every file it imports (transitively), each once."""
        ordered: list[str] = []
        seen: set[str] = set()
        stack = [filename]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            ordered.append(name)
            stack.extend(reversed(self._dependencies[name]))
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._serialized[name] for name in ordered]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        if filename in self._serialized:
            return self._files_response(request, filename)
        return super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        filename = self._files_by_symbol.get(fully_qualified_name)
        if filename is None:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._files_response(request, filename)

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        try:
            message = self._symbols.FindMessageTypeByName(containing_type)
            extension = self._symbols.FindExtensionByNumber(message, extension_number)
            file = self._symbols.FindFileContainingSymbol(extension.full_name)
        except KeyError:
            return super()._file_containing_extension(request, containing_type, extension_number)
        return self._files_response(request, file.name)

    def _all_extension_numbers_of_type(self, request: Any, containing_type: str) -> Any:
        try:
            message = self._symbols.FindMessageTypeByName(containing_type)
        except KeyError:
            return super()._all_extension_numbers_of_type(request, containing_type)
        numbers = sorted(ext.number for ext in self._symbols.FindAllExtensions(message))
        return reflection_pb2.ServerReflectionResponse(
            all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                base_type_name=message.full_name, extension_number=numbers
            ),
            original_request=request,
        )


def enable_reflection(
    service_names: Iterable[str],
    server: Any,
    file_set: descriptor_pb2.FileDescriptorSet | None = None,
) -> Any:
    """Adds grpc.reflection.v1alpha to an aio server; returns the servicer.

    `service_names` are the services the server offers (list_services answers exactly these, plus
    the reflection service). `file_set` defaults to the installed parley.binpb; without one, the
    default servicer answers (descriptors without comments) and a warning says so.
    """
    names = tuple(dict.fromkeys([*service_names, REFLECTION_SERVICE_NAME]))
    if file_set is None:
        file_set = load_descriptor_set()
    servicer: Any
    if file_set is None:
        log.warning(
            "no descriptor set %s/%s: reflection serves descriptors without comments "
            "(run `make proto`)",
            DESCRIPTOR_SET_PACKAGE.replace(".", "/"),
            DESCRIPTOR_SET_NAME,
        )
        servicer = reflection.aio.ReflectionServicer(names)
    else:
        servicer = DescriptorSetReflectionServicer(names, file_set)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    return servicer
