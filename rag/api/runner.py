"""Run one answer in a worker thread and hand its pieces to the event loop.

``answer_events`` waits for a slot at the `AnswerGate` (or raises `Busy`), then
drives ``RAG.ask_stream`` in its own thread. When the consumer stops (the
client disconnected and the response called ``stop``), the thread closes the
``ask_stream`` generator at the next piece; closing it closes the engine's
stream, which stops decoding. The slot is freed only when the thread is done,
so ``concurrency`` really bounds the generations running.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import AsyncIterator, Sequence

from rag.api.queue import AnswerGate
from rag.records import Answer

logger = logging.getLogger(__name__)

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class AnswerRun:
    """One generation: ``events()`` yields str pieces then the `Answer`; ``stop()`` ends it early."""

    def __init__(self, rag, gate: AnswerGate, question: str, history: Sequence = (), top_k: int | None = None,
                 backend: str | None = None) -> None:
        self.rag, self.gate = rag, gate
        self.args = (question, history, top_k, backend)
        self._stop = threading.Event()
        self.stopped_at: float | None = None

    def stop(self) -> None:
        if not self._stop.is_set():
            self.stopped_at = time.monotonic()
            self._stop.set()

    async def events(self) -> AsyncIterator[str | Answer]:
        await self.gate.enter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
                self._stop.set()

        def produce() -> None:
            started = time.perf_counter()
            stream = None
            cut = False  # stopped before the stream's end
            try:
                question, history, top_k, backend = self.args
                stream = self.rag.ask_stream(question, history=history, top_k=top_k, backend=backend)
                for item in stream:
                    if self._stop.is_set():
                        cut = True
                        break
                    put(item)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
                put(_Failure(e))
            finally:
                if stream is not None:
                    stream.close()  # GeneratorExit in ask_stream closes the engine's stream
                self.gate.release(time.perf_counter() - started)
                put(_END)
                if cut:  # not when the consumer simply returned after the final Answer
                    logger.info("generation stopped: the client went away")

        threading.Thread(target=produce, name="wenyuan-answer", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.stop()

    async def answer(self) -> Answer:
        """Run to the end and return the final `Answer`."""
        final = None
        async for item in self.events():
            if isinstance(item, Answer):
                final = item
        if final is None:
            raise RuntimeError("ask_stream ended without an Answer")
        return final
