"""A daemon thread, optionally at a lower OS priority, that runs submitted calls in order.

The shadow runs the challenger (and records shed jobs) on these, so it yields the CPU to the
champion (`nice`) and a challenger stuck for good cannot keep the service from exiting.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


def lower_priority(nice: int) -> None:
    """Renice the calling thread by `nice` (Linux: per thread); harmless where unsupported."""
    if nice <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):  # platform dependent
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class ModelThread:
    """One daemon thread (at the shadow's priority) running submitted calls in order.

    Daemon, unlike a ThreadPoolExecutor's workers, so a challenger stuck for good cannot keep
    the service from exiting.
    """

    def __init__(
        self,
        initializer: Callable[[], None] | None = None,
        name: str = "shadow-model",
        nice: int = 0,
    ) -> None:
        self._initializer, self._nice = initializer, nice
        self._calls: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        self._calls.put(_STOP)

    def _work(self) -> None:
        lower_priority(self._nice)
        if self._initializer is not None:
            self._initializer()
        while (call := self._calls.get()) is not _STOP:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the waiting dispatcher
                future.set_exception(err)
