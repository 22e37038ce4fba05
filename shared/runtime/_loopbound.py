"""Clients that belong to an event loop.

An async HTTP client (aiohttp under the table client, httpx for the key fetches) opens its
connections on the loop that first uses it and must be used and closed there. The Functions worker
runs every invocation of an async function on one loop, so in Azure there is one client of each
kind per process, created on first use and reused. Elsewhere (a data command's `asyncio.run`, the
tests) other loops get clients of their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["PerLoop"]


class PerLoop[T]:
    """One `T` per running event loop, built by `factory(key)` on first use there and rebuilt
    when `key` changes (new settings); replaced and reset ones are closed on their own loop."""

    def __init__(self, factory: Callable[[Any], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._factory = factory
        self._close = close
        self._items: dict[asyncio.AbstractEventLoop, tuple[Any, T]] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, key: Any) -> T:
        loop = asyncio.get_running_loop()
        entry = self._items.get(loop)
        if entry is not None and entry[0] is key:
            return entry[1]
        item = self._factory(key)
        with self._lock:
            self._items[loop] = (key, item)
        if entry is not None:
            self._close_soon(loop, entry[1])
        return item

    def reset(self) -> None:
        """Forget every loop's item and close each on its loop (waiting for it, from another
        thread; scheduled, from the loop itself)."""
        with self._lock:
            items = list(self._items.items())
            self._items.clear()
        for loop, (_, item) in items:
            self._close_soon(loop, item, wait=True)

    def _close_soon(self, loop: asyncio.AbstractEventLoop, item: T, wait: bool = False) -> None:
        if loop.is_closed() or not loop.is_running():
            return  # its loop is gone: so are its connections
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(self._closing_coroutine(item))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            future = asyncio.run_coroutine_threadsafe(self._closing_coroutine(item), loop)
            if wait:
                future.result(timeout=10)

    async def _closing_coroutine(self, item: T) -> None:
        await self._close(item)
