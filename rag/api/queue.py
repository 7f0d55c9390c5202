"""Backpressure for answers: ``concurrency`` generate at once, at most ``max_queue`` wait.

A request that finds the queue full gets a `Busy` right away (the routes turn
it into 429 with ``Retry-After``), never a hang. Searches do not pass through
here, so they never wait behind generation. The gate lives on the event loop;
`release` may be called from a worker thread once its generation has ended.

`gated(rag, gate)` is the pipeline as another front end sees it (the chat UI in
``rag serve``): its ``ask``/``ask_stream`` take a slot of the same gate from a
worker thread, so UI and API answers together generate ``concurrency`` at once.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Iterator

logger = logging.getLogger(__name__)


class Busy(Exception):
    """The answer queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AnswerGate:
    """Admits answer generations: ``concurrency`` running, ``max_queue`` waiting."""

    def __init__(self, concurrency: int = 1, max_queue: int = 16) -> None:
        if concurrency < 1 or max_queue < 0:
            raise ValueError(f"concurrency must be >= 1 and max_queue >= 0, got {concurrency} and {max_queue}")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.admitted = 0  # running + waiting
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seconds = 5.0  # running mean of one generation's duration, for Retry-After

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._loop = self._loop or asyncio.get_running_loop()
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times a generation's mean duration."""
        rounds = max(1, self.admitted) / self.concurrency
        return max(1, math.ceil(rounds * self._seconds))

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tie the gate to the server's event loop (at startup), so worker threads can `enter_blocking`."""
        if self._loop is None:
            self._loop = loop

    async def enter(self, limit: bool = True) -> None:
        """Wait for a generation slot, or raise `Busy` at once when the queue is full (``limit``)."""
        slots = self._semaphore()
        if limit and self.admitted >= self.concurrency + self.max_queue:
            raise Busy(self.retry_after(), f"the server is busy: {self.concurrency} answer(s) generating and "
                                           f"{self.max_queue} waiting; retry in {self.retry_after()} s")
        self.admitted += 1
        try:
            await slots.acquire()
        except BaseException:  # cancelled while waiting (client gone): leave the queue
            self.admitted -= 1
            raise

    def enter_blocking(self) -> bool:
        """From a worker thread: wait for a slot, however long the queue (the caller has its own queue).

        Returns False, admitting nothing, when the gate is not bound to a running loop
        (no server: nothing to share a slot with); True means call `release` when done.
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("enter_blocking() on the event loop's own thread would deadlock; await enter()")
        asyncio.run_coroutine_threadsafe(self.enter(limit=False), loop).result()
        return True

    def release(self, seconds: float | None = None) -> None:
        """Free a slot; thread-safe. ``seconds``: how long the generation took."""
        if seconds is not None:
            self._seconds = 0.8 * self._seconds + 0.2 * seconds
        assert self._loop is not None and self._slots is not None  # release only after enter
        try:
            self._loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop has closed: the server is gone, and the gate with it
            pass

    def _release(self) -> None:
        self.admitted -= 1
        self._slots.release()


class _Gated:
    """A `RAG` whose answers take a slot of ``gate``; every other attribute is the RAG's own.

    With ``current`` (a callable returning the RAG to use now, such as the API's registry
    entry) a knowledge base changed through the API is what the UI searches next, with the
    indexes the UI added by ``search_also`` (its uploads) carried over. `choose` gives a
    view on another RAG (another choice of knowledge bases) that shares the gate and the
    added indexes.
    """

    def __init__(self, rag, gate: AnswerGate, current=None, also: dict | None = None) -> None:
        object.__setattr__(self, "_rag", rag)
        object.__setattr__(self, "_gate", gate)
        object.__setattr__(self, "_current", current)
        # Shared by every view: key -> index (None: removed), and a version that counts changes.
        object.__setattr__(self, "_also", also if also is not None else {"indexes": {}, "version": 0})
        object.__setattr__(self, "_seen", (None, -1))  # (RAG, version) last brought up to date

    def choose(self, current) -> "_Gated":
        """A view whose questions go to the RAG ``current()`` returns, with this one's gate and added indexes."""
        return _Gated(None, self._gate, current, self._also)

    def _now(self):
        rag = self._rag if self._current is None else self._current()
        version = self._also["version"]
        if self._seen[0] is not rag or self._seen[1] != version:
            for key, index in list(self._also["indexes"].items()):  # None: removed, and removed here too
                rag.search_also(key, index)
            object.__setattr__(self, "_rag", rag)
            object.__setattr__(self, "_seen", (rag, version))
        return rag

    def __getattr__(self, name: str):
        return getattr(self._now(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._now(), name, value)

    def search_also(self, key: str, index) -> None:
        rag = self._now()
        self._also["indexes"][key] = index
        self._also["version"] += 1
        rag.search_also(key, index)
        object.__setattr__(self, "_seen", (rag, self._also["version"]))

    def ask(self, *args, **kwargs):
        rag = self._now()
        entered, started = self._gate.enter_blocking(), time.perf_counter()
        try:
            return rag.ask(*args, **kwargs)
        finally:
            if entered:
                self._gate.release(time.perf_counter() - started)

    def ask_stream(self, *args, **kwargs) -> Iterator:
        rag = self._now()
        entered, started = self._gate.enter_blocking(), time.perf_counter()
        try:
            yield from rag.ask_stream(*args, **kwargs)
        finally:  # also when the consumer closes the stream early
            if entered:
                self._gate.release(time.perf_counter() - started)


def gated(rag, gate: AnswerGate, current=None):
    """``rag`` for a front end with its own threads (the chat UI): its answers share ``gate`` with
    the API; with ``current``, each question uses the RAG it returns then (see `_Gated`)."""
    return _Gated(rag, gate, current)
