"""Models built ahead: a background thread builds the sweep's next models on the CPU (weights read,
meta-device build, weights assigned) while the device runs the current ones, so that loading a pass
waits for little more than the move to the device and the compile.

The runner says which models come, in the order the passes will load them (`expect`); the thread
builds them in that order, at most `AHEAD_MODELS` ahead and, once one is waiting, only while the
models built but not yet taken hold less than `HOST_MEMORY_SHARE` of the host's available memory.
`take(spec)` returns the built model, or raises the error its build raised (so a model that fails
to build is recorded as it always was), or builds it here if it was never expected. Models expected
before the one taken that were never taken are dropped (a rank that left them to a later pass).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from mlreassess.inference.models.model_runner import module_bytes
from mlreassess.inference.models.registry import LoadedModel, ModelSpec
from mlreassess.inference.sweep.passes import free_memory

log = logging.getLogger(__name__)

AHEAD_MODELS = 8  # built models waiting to be taken, at most
HOST_MEMORY_SHARE = 0.25  # of the host's available memory (MemAvailable) the waiting models may hold


@dataclass
class _Built:
    loaded: LoadedModel | None
    error: BaseException | None
    seconds: float
    nbytes: int


class Builds:
    """The background builder of one sweep (see the module's docstring)."""

    def __init__(self, make: Callable[[ModelSpec], LoadedModel], budget_bytes: int | None = None,
                 ahead: int = AHEAD_MODELS):
        self._make = make
        self.budget = int(free_memory("cpu") * HOST_MEMORY_SHARE) if budget_bytes is None else budget_bytes
        self.ahead = ahead
        self._queue: list[ModelSpec] = []  # expected and not yet taken, in order
        self._done: dict[ModelSpec, _Built] = {}
        self._building: ModelSpec | None = None
        self._held = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.seconds: dict[str, float] = {}  # model -> seconds its build took (here or in the thread)

    def expect(self, specs: list[ModelSpec]) -> None:
        with self._cond:
            self._queue += list(specs)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="mlreassess-builds", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take(self, spec: ModelSpec) -> LoadedModel:
        """`spec` built (waiting for the thread if it is on its way), or its build's error raised."""
        with self._cond:
            if spec in self._queue:
                for skipped in self._queue[: self._queue.index(spec)]:
                    self._forget(skipped)
                self._cond.notify_all()  # a forgotten model made room: the thread may build `spec`
                while spec not in self._done and not self._closed:
                    self._cond.wait()
                built = self._done.pop(spec, None)
                if built is not None:
                    self._queue.remove(spec)
                    self._held -= built.nbytes
                    self._cond.notify_all()
            else:
                built = None
        if built is None:  # never expected (or closed): built here, as without this class
            built = self._build(spec)
        self.seconds[spec.name] = built.seconds
        if built.error is not None:
            raise built.error
        return built.loaded

    def close(self) -> None:
        """Stop building and wait for the thread to end (a build under way finishes; its model is
        dropped). Joined, not left to die with the process: a thread that has run torch code and is
        still alive at interpreter exit can abort the process ("terminate called without an active
        exception") after the sweep has finished."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._done.clear()
            self._held = 0
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _forget(self, spec: ModelSpec) -> None:
        self._queue.remove(spec)
        built = self._done.pop(spec, None) if spec not in self._queue else None
        if built is not None:
            self._held -= built.nbytes

    def _build(self, spec: ModelSpec) -> _Built:
        start = time.perf_counter()
        try:
            loaded = self._make(spec)
        except Exception as exc:  # recorded for the model when it is taken, as a load error
            return _Built(None, exc, time.perf_counter() - start, 0)
        return _Built(loaded, None, time.perf_counter() - start, module_bytes(loaded.module))

    def _next(self) -> ModelSpec | None:
        """(Under the lock) the next model to build, once there is room; None when closed."""
        while not self._closed:
            waiting = sum(1 for s in self._done if s in self._queue)
            todo = next((s for s in self._queue if s not in self._done), None)
            room = waiting == 0 or (waiting < self.ahead and self._held < self.budget)
            if todo is not None and room:
                return todo
            self._cond.wait()
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                spec = self._building = self._next()
            if spec is None:
                return
            built = self._build(spec)
            with self._cond:
                self._building = None
                if spec in self._queue and not self._closed:  # still wanted
                    self._done[spec] = built
                    self._held += built.nbytes
                self._cond.notify_all()
