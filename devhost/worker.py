"""The proxy worker's part, in-process: drives the Functions runtime library the way Azure does.

For Python 3.13+, Azure runs a small proxy worker (shipped with the host) that owns the gRPC stream
to the Functions host and hands each message to the runtime library the app pins in
`requirements.txt` (`azure-functions-runtime`). This module plays that proxy for the dev host:

    start_threadpool_executor -> worker_init_request (the library indexes function_app.py)
      -> functions_metadata_request -> function_load_request (each function)
      -> invocation_request, once per invocation, on one event loop

Messages are the protocol's (`devhost.protos`), handed over as they are, without gRPC. The library
keeps its state in module globals, so a process runs one app: `RuntimeWorker.start(directory)`
returns the process's worker and refuses a second app directory.

Log attribution is the proxy's job too: it ties a record to the invocation whose task (the task
that runs `invocation_request`, and the tasks it starts) or runtime thread (the library's
`invocation_id_cv`, set where it runs a sync function) emitted it. A record emitted anywhere else,
for instance on a pool thread of the app's own, reaches Application Insights tied to no
invocation. `attribution()` answers that question here the same way, and every record carries
the answer (`record.invocation_id`, `record.function_name`; None when untied).
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from devhost import protos

__all__ = ["AttributedFormatter", "IndexedFunction", "RuntimeWorker", "WorkerError", "attribution"]

log = logging.getLogger("devhost.worker")
HOST_VERSION = "4.1044.0"
"""The Functions host version the dev host reports to the library (a current 4.x)."""

_running: dict[str, str] = {}
"""invocation id -> function name, while the invocation runs."""


class WorkerError(RuntimeError):
    """The runtime library answered a request with a failure (as the host would report it)."""


@dataclass(frozen=True)
class WorkerRequest:
    """What the proxy hands the library: the message, and (at init) the protos and host."""

    name: str
    request: protos.StreamingMessage
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the library reported it in its metadata."""

    function_id: str
    name: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))


class _InvocationTask(asyncio.Task[Any]):
    """A task that belongs to the invocation of the task that created it (the proxy's
    ContextEnabledTask): what an invocation gathers or starts is still that invocation's."""

    invocation_id: str | None

    def __init__(self, coro: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(coro, loop=loop, **kwargs)
        parent = asyncio.current_task(loop)
        self.invocation_id = getattr(parent, "invocation_id", None)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    return _InvocationTask(coro, loop=loop, **kwargs)


def attribution() -> str | None:
    """The invocation the current task or thread works for, as the proxy worker decides it: the
    invocation's task (and the tasks it started), else the runtime's context variable (set on
    the thread that runs a sync function). Anything else is tied to no invocation."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        task = None
    invocation_id: str | None = getattr(task, "invocation_id", None)
    if invocation_id is None:
        from azure_functions_runtime import invocation_id_cv  # the runtime library loads when the worker starts

        invocation_id = invocation_id_cv.get()
    return invocation_id


def _stamping_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        invocation_id = attribution()
        record.invocation_id = invocation_id
        record.function_name = _running.get(invocation_id) if invocation_id else None
        return record

    factory.devhost_attribution = True  # type: ignore[attr-defined]
    return factory


class AttributedFormatter(logging.Formatter):
    """Console lines that show which invocation a record belongs to, as Application Insights
    would file it: `%(invocation)s` is `[sales_highlights 1f0c...]`, or `[no invocation]` for an
    untied record."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s %(invocation)s %(message)s") -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        invocation_id = getattr(record, "invocation_id", None)
        name = getattr(record, "function_name", None) or "function"
        record.invocation = f"[{name} {invocation_id}]" if invocation_id else "[no invocation]"
        return super().format(record)


def _check(result: protos.StatusResult, what: str) -> None:
    if result.status != protos.StatusResult.Success:
        exception = result.exception
        raise WorkerError(f"{what} failed: {exception.message}\n{exception.stack_trace}".rstrip())


class RuntimeWorker:
    """The runtime library, initialized for one app directory and serving invocations."""

    _instance: ClassVar[RuntimeWorker | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def start(cls, directory: Path) -> RuntimeWorker:
        """The process's worker for `directory`, initialized on first use."""
        directory = directory.resolve()
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(directory)
            elif cls._instance.directory != directory:
                raise WorkerError(
                    f"this process already runs the app in {cls._instance.directory}; "
                    "the runtime library holds one app per process"
                )
            return cls._instance

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        if str(directory) not in sys.path:  # the worker imports the app from its own directory
            sys.path.insert(0, str(directory))
        if not getattr(logging.getLogRecordFactory(), "devhost_attribution", False):
            logging.setLogRecordFactory(_stamping_factory(logging.getLogRecordFactory()))
        self._loop = asyncio.new_event_loop()
        self._loop.set_task_factory(_task_factory)
        self._thread = threading.Thread(target=self._loop.run_forever, name="worker-loop", daemon=True)
        self._thread.start()
        self.functions: list[IndexedFunction] = self._run(self._initialize())

    def stop(self) -> None:
        """Stop the event loop (after the app closed what it opened on it) and the runtime's
        thread pool; the process's worker can then not be started again."""
        import azure_functions_runtime.utils.threadpool as threadpool  # loaded by the worker's start

        if self._loop.is_closed():
            return

        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self._loop.shutdown_asyncgens()

        if self._thread.is_alive():
            self._run(cancel_the_rest(), timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
        threadpool.stop_threadpool_executor()

    def _run[T](self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _initialize(self) -> list[IndexedFunction]:
        import azure_functions_runtime as runtime  # the library loads when the worker starts, as the proxy loads it

        runtime.start_threadpool_executor()
        init = await runtime.worker_init_request(
            WorkerRequest(
                "WorkerInitRequest",
                protos.StreamingMessage(
                    request_id=str(uuid.uuid4()),
                    worker_init_request=protos.WorkerInitRequest(
                        host_version=HOST_VERSION,
                        capabilities={},
                        worker_directory=str(Path(runtime.__file__).parent),
                        function_app_directory=str(self.directory),
                    ),
                ),
                {"protos": protos, "host": "127.0.0.1"},
            )
        )
        _check(init.result, "indexing the app (WorkerInitRequest)")
        log.debug(
            "runtime %s on Python %s (%s)",
            init.worker_metadata.worker_version,
            init.worker_metadata.runtime_version,
            platform.machine(),
        )
        metadata = await runtime.functions_metadata_request(
            WorkerRequest(
                "WorkerMetadataRequest",
                protos.StreamingMessage(
                    functions_metadata_request=protos.FunctionsMetadataRequest(
                        function_app_directory=str(self.directory)
                    )
                ),
            )
        )
        _check(metadata.result, "listing the functions (FunctionsMetadataRequest)")
        functions = []
        for meta in metadata.function_metadata_results:
            load = await runtime.function_load_request(
                WorkerRequest(
                    "FunctionLoadRequest",
                    protos.StreamingMessage(
                        function_load_request=protos.FunctionLoadRequest(function_id=meta.function_id, metadata=meta)
                    ),
                )
            )
            _check(load.result, f"loading {meta.name} (FunctionLoadRequest)")
            bindings = tuple(json.loads(raw) for raw in meta.raw_bindings)
            functions.append(IndexedFunction(meta.function_id, meta.name, bindings))
        return functions

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop invocations run on (the dev host's HTTP front serves on it too)."""
        return self._loop

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """`coroutine` on the worker's loop, from another thread; its result."""
        return self._run(coroutine, timeout)

    async def invoke(
        self,
        function: IndexedFunction,
        input_data: list[protos.ParameterBinding],
        *,
        trace_parent: str = "",
        trace_state: str = "",
        timeout: float | None = None,
    ) -> protos.InvocationResponse:
        """One InvocationRequest, as the host sends it; the library's InvocationResponse. Awaited
        on the worker's loop: the invocation runs as a task of its own, as the proxy runs it.
        Raises TimeoutError when the invocation runs past `timeout` (the host's functionTimeout);
        the invocation itself is not cancelled (the host gives up on it, it does not stop it)."""
        invocation_id = str(uuid.uuid4())
        request = protos.InvocationRequest(
            invocation_id=invocation_id,
            function_id=function.function_id,
            input_data=input_data,
            trace_context=protos.RpcTraceContext(trace_parent=trace_parent, trace_state=trace_state),
        )
        task = self._loop.create_task(self._invoke(invocation_id, function.name, request))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise TimeoutError(f"{function.name} ran past {timeout} s (invocation {invocation_id})") from None

    async def _invoke(
        self, invocation_id: str, name: str, request: protos.InvocationRequest
    ) -> protos.InvocationResponse:
        import azure_functions_runtime as runtime  # the library loads when the worker starts, as the proxy loads it

        # This task is the invocation's (the proxy marks it the same way); tasks it starts inherit it.
        task = asyncio.current_task()
        assert isinstance(task, _InvocationTask)
        task.invocation_id = invocation_id
        _running[invocation_id] = name
        try:
            response: protos.InvocationResponse = await runtime.invocation_request(
                WorkerRequest("FunctionInvocationRequest", protos.StreamingMessage(invocation_request=request))
            )
            return response
        finally:
            _running.pop(invocation_id, None)
