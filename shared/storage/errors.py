"""What a storage call can end in. Only the storage package raises these; the request pipeline maps
them to HTTP in its one place (every one is a 503 to a caller: the store, not the request, failed).

    StorageError
    ├── Unavailable     the store did not answer in time, or failed in a way that is not the
    │   │               request's doing (connection reset, timeout, 5xx): reported, safe to re-send
    │   ├── OutOfTime   the request's time ran out before the call could start: it never started
    │   └── Overloaded  refused by admission (`_gate`): it could not finish in its budget behind
    │                   the work ahead of it; nothing of it started
    ├── Conflict        a condition failed: the entity changed, appeared or went since it was read
    │                   (412, 409, 404 on a conditional operation); the write path retries these
    └── TableMissing    the table does not exist (a deployment without it, a wrong table name)
"""

from __future__ import annotations

__all__ = ["Conflict", "OutOfTime", "Overloaded", "StorageError", "TableMissing", "Unavailable"]


class StorageError(Exception):
    """`detail` is for the log: which call, what the store said (never an entity's content)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unavailable(StorageError):
    pass


class OutOfTime(Unavailable):
    pass


class Overloaded(Unavailable):
    pass


class Conflict(StorageError):
    pass


class TableMissing(StorageError):
    pass
