"""The messages of the Functions language worker protocol (FunctionRpc.proto) that the runtime
library reads and writes, as small in-process classes.

Azure's proxy worker hands the library the generated protobuf classes (`properties["protos"]`).
In-process nothing is serialized, so plain classes with the protocol's field names do, as long as
they behave like protobuf messages where the library relies on it: an unset sub-message reads as
an empty default, `WhichOneof` names the member of a oneof that is set, setting one member clears
the others, `None` in a constructor leaves a field unset, and enums are int constants on the class
(`StatusResult.Success`, `BindingInfo.out`). Only the fields the library and the dev host use are
declared; an unknown field name raises, as protobuf does.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BindingInfo",
    "FunctionLoadRequest",
    "FunctionLoadResponse",
    "FunctionMetadataResponse",
    "FunctionsMetadataRequest",
    "InvocationRequest",
    "InvocationResponse",
    "Message",
    "NullableBool",
    "NullableDouble",
    "NullableString",
    "NullableTimestamp",
    "ParameterBinding",
    "RetryContext",
    "RpcException",
    "RpcFunctionMetadata",
    "RpcHttp",
    "RpcHttpCookie",
    "RpcRetryOptions",
    "RpcTraceContext",
    "StatusResult",
    "StreamingMessage",
    "TypedData",
    "WorkerInitRequest",
    "WorkerInitResponse",
    "WorkerMetadata",
]

REPEATED: Any = list
MAP: Any = dict


class Sub(str):
    """A sub-message field: the name of its message class."""


class Message:
    """A protobuf-like message. `FIELDS` maps a field name to its default: a scalar default,
    `REPEATED`, `MAP`, or `Sub(name of a message class)` (a sub-message)."""

    FIELDS: ClassVar[dict[str, Any]] = {}
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {}
    _SIBLINGS: ClassVar[dict[str, tuple[str, ...]]] = {}
    """A oneof member's name -> the other members of its oneof (computed per class)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._SIBLINGS = {m: tuple(o for o in ms if o != m) for ms in cls.ONEOFS.values() for m in ms}

    def __init__(self, **fields: Any) -> None:
        self._values: dict[str, Any] = {}
        for name, value in fields.items():
            if value is not None:
                setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self._values
        if name in values:
            return values[name]
        spec = self._spec(name)
        if spec is REPEATED or spec is MAP:
            return values.setdefault(name, spec())
        if isinstance(spec, Sub):
            return _MESSAGES[spec]()  # an unset sub-message reads as an empty one, and stays unset
        return spec

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_values":
            object.__setattr__(self, name, value)
            return
        spec = self._spec(name)
        if spec is REPEATED or spec is MAP:
            value = spec(value)
        values = self._values
        for other in self._SIBLINGS.get(name, ()):
            values.pop(other, None)
        values[name] = value

    @classmethod
    def _spec(cls, name: str) -> Any:
        try:
            return cls.FIELDS[name]
        except KeyError:
            raise AttributeError(f'Protocol message {cls.__name__} has no "{name}" field.') from None

    def HasField(self, name: str) -> bool:
        self._spec(name)
        return name in self._values

    def WhichOneof(self, group: str) -> str | None:
        return next((m for m in self.ONEOFS[group] if m in self._values), None)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


class NullableString(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"value": ""}


class NullableBool(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"value": False}


class NullableDouble(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"value": 0.0}


class NullableTimestamp(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"value": None}


class RpcHttpCookie(Message):
    class SameSite:
        Lax = 1
        Strict = 2
        ExplicitNone = 3

    FIELDS: ClassVar[dict[str, Any]] = {
        "name": "",
        "value": "",
        "domain": Sub("NullableString"),
        "path": Sub("NullableString"),
        "expires": Sub("NullableTimestamp"),
        "secure": Sub("NullableBool"),
        "http_only": Sub("NullableBool"),
        "same_site": 0,
        "max_age": Sub("NullableDouble"),
    }


setattr(RpcHttpCookie.SameSite, "None", 0)


class RpcHttp(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "method": "",
        "url": "",
        "headers": MAP,
        "body": Sub("TypedData"),
        "params": MAP,
        "status_code": "",
        "query": MAP,
        "enable_content_negotiation": False,
        "raw_body": Sub("TypedData"),
        "identities": REPEATED,
        "cookies": REPEATED,
        "nullable_headers": MAP,
        "nullable_params": MAP,
        "nullable_query": MAP,
    }


class TypedData(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "string": "",
        "json": "",
        "bytes": b"",
        "stream": b"",
        "http": Sub("RpcHttp"),
        "int": 0,
        "double": 0.0,
        "collection_bytes": REPEATED,
        "collection_string": REPEATED,
        "collection_double": REPEATED,
        "collection_sint64": REPEATED,
    }
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {"data": tuple(FIELDS)}


class ParameterBinding(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"name": "", "data": Sub("TypedData"), "rpc_shared_memory": None}
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {"rpc_data": ("data", "rpc_shared_memory")}


class RpcException(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "source": "",
        "stack_trace": "",
        "message": "",
        "is_user_exception": False,
        "type": "",
    }


class StatusResult(Message):
    Failure = 0
    Success = 1
    Cancelled = 2
    FIELDS: ClassVar[dict[str, Any]] = {"status": 0, "result": "", "exception": Sub("RpcException"), "logs": REPEATED}


class BindingInfo(Message):
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3
    FIELDS: ClassVar[dict[str, Any]] = {"type": "", "direction": 0, "data_type": 0, "properties": MAP}


setattr(BindingInfo, "in", 0)


class RpcRetryOptions(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "max_retry_count": 0,
        "delay_interval": None,
        "minimum_interval": None,
        "maximum_interval": None,
        "retry_strategy": 0,
    }


class RpcFunctionMetadata(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "name": "",
        "directory": "",
        "script_file": "",
        "entry_point": "",
        "bindings": MAP,
        "is_proxy": False,
        "status": Sub("StatusResult"),
        "language": "",
        "raw_bindings": REPEATED,
        "function_id": "",
        "managed_dependency_enabled": False,
        "retry_options": Sub("RpcRetryOptions"),
        "properties": MAP,
    }


class WorkerMetadata(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "runtime_name": "",
        "runtime_version": "",
        "worker_version": "",
        "worker_bitness": "",
        "custom_properties": MAP,
    }


class WorkerInitRequest(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "host_version": "",
        "capabilities": MAP,
        "log_categories": MAP,
        "worker_directory": "",
        "function_app_directory": "",
    }


class WorkerInitResponse(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "worker_version": "",
        "capabilities": MAP,
        "result": Sub("StatusResult"),
        "worker_metadata": Sub("WorkerMetadata"),
    }


class FunctionsMetadataRequest(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"function_app_directory": ""}


class FunctionMetadataResponse(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "function_metadata_results": REPEATED,
        "result": Sub("StatusResult"),
        "use_default_metadata_indexing": False,
    }


class FunctionLoadRequest(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "function_id": "",
        "metadata": Sub("RpcFunctionMetadata"),
        "managed_dependency_enabled": False,
    }


class FunctionLoadResponse(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "function_id": "",
        "result": Sub("StatusResult"),
        "is_dependency_downloaded": False,
    }


class RpcTraceContext(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"trace_parent": "", "trace_state": "", "attributes": MAP}


class RetryContext(Message):
    FIELDS: ClassVar[dict[str, Any]] = {"retry_count": 0, "max_retry_count": 0, "exception": Sub("RpcException")}


class InvocationRequest(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "invocation_id": "",
        "function_id": "",
        "input_data": REPEATED,
        "trigger_metadata": MAP,
        "trace_context": Sub("RpcTraceContext"),
        "retry_context": Sub("RetryContext"),
    }


class InvocationResponse(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "invocation_id": "",
        "output_data": REPEATED,
        "return_value": Sub("TypedData"),
        "result": Sub("StatusResult"),
    }


class StreamingMessage(Message):
    FIELDS: ClassVar[dict[str, Any]] = {
        "request_id": "",
        "worker_init_request": Sub("WorkerInitRequest"),
        "functions_metadata_request": Sub("FunctionsMetadataRequest"),
        "function_load_request": Sub("FunctionLoadRequest"),
        "invocation_request": Sub("InvocationRequest"),
    }
    ONEOFS: ClassVar[dict[str, tuple[str, ...]]] = {
        "content": ("worker_init_request", "functions_metadata_request", "function_load_request", "invocation_request")
    }


_MESSAGES: dict[str, type[Message]] = {
    cls.__name__: cls for cls in list(globals().values()) if isinstance(cls, type) and issubclass(cls, Message)
}
