"""Batching inside the service: concurrent requests share one `suggest_batch` on a model thread.

Greedy (adaptive) batching: while the model thread is busy, arriving requests queue; the next
batch takes up to `max_batch_size` of them at once, so batches grow with load and an idle
service adds no wait (`linger_ms` > 0 adds a fixed window for batch-mates). When a batch
raises, its items are retried one by one so a bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """`await submit(item)` → `run([... item ...])[i]`, batched across concurrent callers."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch_size: int,
        linger_ms: float = 0.0,
        name: str = "model",
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._run, self.max_batch_size, self.linger_s = run, max_batch_size, linger_ms / 1000
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=initializer
        )
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task | None = None
        self.batches = self.items = self.largest = 0

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (its batch's exception when it fails)."""
        if self._queue is None:  # bound to the serving loop on first use
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work(), name="micro-batcher")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.linger_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(item, fut) for item, fut in await self._collect() if not fut.cancelled()]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            self.largest = max(self.largest, len(batch))
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [item for item, _ in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            except Exception:  # noqa: BLE001 - isolate the item that fails
                await self._one_by_one(batch)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        loop = asyncio.get_running_loop()
        for item, fut in batch:
            try:
                (result,) = await loop.run_in_executor(self._executor, self._run, [item])
            except Exception as err:  # noqa: BLE001 - handed to that request's caller
                if not fut.done():
                    fut.set_exception(err)
                continue
            if not fut.done():
                fut.set_result(result)

    def stats(self) -> dict[str, int]:
        """Batches run, items in them and the largest batch so far (items ÷ batches: mean size)."""
        return {"batches": self.batches, "items": self.items, "largest": self.largest}

    def close(self) -> None:
        """Stop the worker task and the model thread (pending callers are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
