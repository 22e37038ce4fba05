"""Start and stop Azurite (npm package `azurite`, installed by `manage.py`): its Table service,
and on request its Blob service too (what `AzureWebJobsStorage` needs for a timer trigger under
`func start`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

__all__ = ["ACCOUNT", "KEY", "Azurite", "connection_string"]

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "node_modules" / ".bin" / "azurite-table"
BLOB_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"TableEndpoint=http://{host}:{port}/{ACCOUNT};"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """An Azurite Table service on loopback, and a Blob service when `blob_port` is given.
    `location=None` keeps data in memory."""

    def __init__(
        self,
        port: int | None = None,
        location: Path | None = None,
        host: str = "127.0.0.1",
        blob_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.blob_port = blob_port
        self.location = location
        self.process: subprocess.Popen[bytes] | None = None
        self.blob_process: subprocess.Popen[bytes] | None = None
        self._closed: dict[int, threading.Event] = {}

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, self.host)

    def start(self, timeout: float = 30.0) -> Azurite:
        self.process = self._spawn(BIN, "table", self.port)
        if self.blob_port is not None:
            self.blob_process = self._spawn(BLOB_BIN, "blob", self.blob_port)
        deadline = time.monotonic() + timeout
        for process, port in ((self.process, self.port), (self.blob_process, self.blob_port)):
            if process is not None and port is not None:
                self._wait_for(process, port, deadline, timeout)
        return self

    def _spawn(self, binary: Path, service: str, port: int) -> subprocess.Popen[bytes]:
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `python3 manage.py setup` (npm install) first")
        args = [str(binary), f"--{service}Host", self.host, f"--{service}Port", str(port), "--skipApiVersionCheck"]
        if service == "table":
            args.append("--disableProductStyleUrl")
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        args.append("--silent")  # no access log
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT
        )
        closed = self._closed[process.pid] = threading.Event()

        def watch(out: object = process.stdout) -> None:
            # Azurite says so once it has saved its data; the Node process may linger long after
            for line in out:  # type: ignore[attr-defined]
                if b"successfully closed" in line:
                    closed.set()

        threading.Thread(target=watch, name=f"azurite-{service}-output", daemon=True).start()
        return process

    def _wait_for(self, process: subprocess.Popen[bytes], port: int, deadline: float, timeout: float) -> None:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(f"azurite exited with {process.returncode} (is port {port} taken?)")
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"azurite did not answer on {self.host}:{port} within {timeout:.0f}s")

    def stop(self) -> None:
        """SIGINT first: Azurite saves its on-disk data on SIGINT, not on SIGTERM, and says when it
        has. Its Node process can take many seconds more to exit after that (seen: 10-20 s after
        a few writes): once it has said so, or after 10 s, it is killed."""
        for process in (self.process, self.blob_process):
            if process is None or process.poll() is not None:
                continue
            closed = self._closed.get(process.pid, threading.Event())
            try:
                os.killpg(process.pid, signal.SIGINT)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10.0
            while process.poll() is None and not closed.is_set() and time.monotonic() < deadline:
                closed.wait(0.02)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5.0)
            if process.stdout is not None:
                process.stdout.close()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
