"""Champion requests in flight, so shadow work can wait for a quiet moment before it starts.

On a small CPU the challenger doing the champion's work again would take the champion's cores
(and its turns at the GIL). The service counts the champion requests it is serving; the shadow
runner calls `wait_quiet` before each shadow batch and only starts once no champion request has
been in flight for a short quiet period, so shadow work fills idle time instead of stealing it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class InFlight:
    """A count of champion requests being served, and the time the last one finished."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._count = 0
        self._idle_since = time.monotonic()
        self._waiting = 0

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one champion request for the duration of the block."""
        with self._state:
            self._count += 1
        try:
            yield
        finally:
            with self._state:
                self._count -= 1
                if self._count == 0:
                    self._idle_since = time.monotonic()
                    self._state.notify_all()

    @property
    def busy(self) -> bool:
        """True while at least one champion request is in flight."""
        with self._state:
            return self._count > 0

    @property
    def waiting(self) -> int:
        """How many threads are in `wait_quiet` right now (shadow work held back)."""
        with self._state:
            return self._waiting

    def wait_quiet(
        self,
        quiet_s: float,
        *,
        timeout: float | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Block until no request has been in flight for `quiet_s`; False on timeout or cancel.

        `cancelled` is checked at least every 0.5 s so a closing service is not held up.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            self._waiting += 1
            try:
                while not cancelled():
                    now = time.monotonic()
                    left = self._idle_since + quiet_s - now if self._count == 0 else 0.5
                    if self._count == 0 and left <= 0:
                        return True
                    if deadline is not None:
                        if now >= deadline:
                            return False
                        left = min(left, deadline - now)
                    self._state.wait(min(left, 0.5))
                return False
            finally:
                self._waiting -= 1
