"""One worker thread for a sink's blocking I/O (files, SQLite), off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class WorkerThread:
    """Runs callables one at a time on a single thread, so a sink's handle stays on it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)

    async def run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError(f"{self._name}: start() first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
