"""Micro-batching: concurrent requests for the same pipeline run as one batch.

A neural stage encodes a batch of 32 queries in little more time than one, so grouping requests
that arrive together raises throughput with concurrency. There is no waiting window: while one
batch runs (in a worker thread, off the event loop), new requests queue up, and the next batch takes
all of them, so a lone request never waits for company.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 64) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._retired = False
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the latest, for tests and monitoring

    async def submit(self, item: Item) -> Result:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():  # first use, or retired while a caller held it
            self._retired = False
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    def retire(self) -> None:
        """Stop the worker once the requests already queued are answered (a cache evicted this batcher)."""
        self._retired = True
        if self._worker is not None and not self._busy and (self._queue is None or self._queue.empty()):
            self._worker.cancel()

    async def _work(self) -> None:
        queue = self._queue
        if queue is None:
            return
        while not (self._retired and queue.empty()):
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            self._busy = True
            try:
                results = await asyncio.to_thread(self._run_batch, [item for item, _ in live])
            except Exception as error:  # noqa: BLE001 - the error belongs to every request of the batch
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            finally:
                self._busy = False
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
