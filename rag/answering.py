"""Turn retrieved passages into a verified, cited answer, or an honest refusal.

Steps for one question: clean it; rewrite a follow-up into a standalone
question; retrieve; answer with the extractive reader's sentence where the
answer check accepts it on its own (``answer.quote_first``); else generate
(streaming) and hand the text to the answer check (``rag.verify``), which
decides whether to answer and with which citations.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Sequence

from rag.config import AnswerConfig, GenerationConfig
from rag.errors import ModelError
from rag.generation import REFUSAL, PromptSettings, build_generator
from rag.questions import clean_question
from rag.records import Answer, Passage
from rag.rewrite import rewrite_question
from rag.verify import AnswerCheck

logger = logging.getLogger(__name__)


class GeneratorCache:
    """Generators by ``(backend, model)``, each loaded once; `Answerer`s sharing one share the models.

    Several knowledge bases served by one process (`rag.api`) answer with one loaded model this way.
    """

    def __init__(self) -> None:
        self.generators: dict[tuple[str, str], object] = {}
        self.notices: dict[tuple[str, str], str] = {}  # why a backend fell back to extractive
        self.lock = threading.Lock()


class Answerer:
    """Holds generators (loaded once, lazily, in ``generators``) and answers questions."""

    def __init__(self, retrieve: Callable[[str, int | None], list[Passage]], config: GenerationConfig,
                 answer: AnswerConfig | None = None, generators: GeneratorCache | None = None) -> None:
        self._retrieve = retrieve
        self.config = config
        self.check = AnswerCheck(answer, generator=config.model)
        self.generators = generators or GeneratorCache()
        self._generators = self.generators.generators
        self._notices = self.generators.notices
        self._lock = self.generators.lock

    def _model_for(self, backend: str) -> str:
        if backend == "extractive":
            return ""
        if backend == "seq2seq":
            return self.config.seq2seq_model or (self.config.model if self.config.backend == "seq2seq" else "")
        return self.config.model

    @property
    def notice(self) -> str:
        """Why the default backend fell back to extractive ("" when it did not)."""
        backend = self.config.backend
        return self._notices.get((backend, self._model_for(backend)), "")

    def generator(self, backend: str | None = None):
        """The generator for ``backend``; falls back to extractive (with a notice) if its model cannot load.

        Only a model that cannot load falls back (a ModelError: files missing or damaged, an
        engine not installed). A wrong setting (a ConfigError, such as a typo in
        ``generation.engine``) stops here with its message, so no run silently answers with
        another system.
        """
        return self._generator(backend or self.config.backend)[0]

    def _generator(self, backend: str):
        model = self._model_for(backend)
        key = (backend, model)
        with self._lock:
            if key not in self._generators:
                try:
                    if backend == "seq2seq" and not model:
                        raise ModelError("no seq2seq model configured; set generation.seq2seq_model to a T5/mT5/BART folder or id")
                    kwargs = {} if backend == "extractive" else {
                        "max_new_tokens": self.config.max_new_tokens, "prompt": PromptSettings(
                            passages=self.config.prompt_passages or None, focus=self.config.prompt_focus,
                            focus_from=self.config.prompt_focus_from, style=self.config.prompt_style)}
                    if backend == "causal":
                        kwargs.update(engine=self.config.engine, prompt_lookup=self.config.prompt_lookup)
                    # llama.cpp reads the GGUF itself: no transformers folder to provision.
                    if model and not (backend == "causal" and self.config.engine == "llamacpp"):
                        model = _resolve(model)
                    self._generators[key] = build_generator(backend, model or None, **kwargs)
                except ModelError as e:
                    logger.error("generator %s unavailable, using the extractive backend: %s", backend, e)
                    self._notices[key] = f"生成模型无法加载，已改用抽取式回答：{e}"
                    self._generators[key] = build_generator("extractive")
            return self._generators[key], self._notices.get(key, "")

    def ask(self, question: str, history: Sequence = (), top_k: int | None = None, backend: str | None = None) -> Answer:
        answer = None
        for piece in self.ask_stream(question, history, top_k, backend):
            if isinstance(piece, Answer):
                answer = piece
        assert answer is not None  # ask_stream always ends with an Answer
        return answer

    def ask_stream(self, question: str, history: Sequence = (), top_k: int | None = None, backend: str | None = None) -> Iterator[str | Answer]:
        """Yield text pieces as they are generated, then the final verified `Answer`."""
        t0 = time.perf_counter()
        question = clean_question(question, self.config.max_question_chars)
        standalone = rewrite_question(question, history)
        t_rw = time.perf_counter()
        passages = tuple(self._retrieve(standalone, top_k))
        t_ret = time.perf_counter()
        timings = {"rewrite_ms": _ms(t0, t_rw), "retrieve_ms": _ms(t_rw, t_ret)}
        gen, notice = self._generator(backend or self.config.backend)
        name = getattr(gen, "backend", backend or self.config.backend)
        base = dict(question=question, standalone_question=standalone, passages=passages, backend=name, notice=notice)
        if not self.check.worth_generating(standalone, passages):
            timings["total_ms"] = _ms(t0, time.perf_counter())
            yield REFUSAL
            yield Answer(text=REFUSAL, refused=True, timings=timings, refusal_reason="no_evidence", **base)
            return
        quoted = self.check.quote(standalone, passages) if self.check.config.quote_first else None
        if quoted is not None:
            # The reader's sentence clears the check on its own, so the check would answer with
            # it whatever the generator said: no generation.
            timings.update(quoted=1, first_token_ms=_ms(t_ret, time.perf_counter()))
            timings["verify_ms"] = timings["first_token_ms"]
            timings["total_ms"] = _ms(t0, time.perf_counter())
            yield quoted.text
            yield Answer(text=quoted.text, citations=quoted.citations, refused=False, timings=timings, raw="",
                         score=quoted.score, candidate=quoted.candidate, signals=dict(quoted.signals), **base)
            return
        pieces: list[str] = []
        log_probs: list[float] = []
        usage: dict[str, int] = {}
        first = None
        # Only engines that report token probabilities take log_probs, and only engines that
        # count tokens take usage (a generator of one's own may do neither).
        extra: dict = {}
        if getattr(gen, "token_log_probs", False):
            extra["log_probs"] = log_probs
        if getattr(gen, "reports_usage", False):
            extra["usage"] = usage
        stream = gen.stream(standalone, passages, **extra)
        for piece in stream:
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
            yield piece
        t_gen = time.perf_counter()
        raw = "".join(pieces).strip()
        timings.update(first_token_ms=_ms(t_ret, first or t_gen), generate_ms=_ms(t_ret, t_gen))
        verdict = self.check.check(standalone, raw, passages, log_probs)
        if verdict.rescued:
            timings["rescued"] = 1
        timings["verify_ms"] = _ms(t_gen, time.perf_counter())
        timings["total_ms"] = _ms(t0, time.perf_counter())
        logger.debug("raw answer %r -> %r (refused=%s, score=%.3f)", raw, verdict.text, verdict.refused, verdict.score)
        yield Answer(text=verdict.text, citations=verdict.citations, refused=verdict.refused, timings=timings, raw=raw,
                     score=verdict.score, candidate=verdict.candidate, refusal_reason=verdict.reason,
                     signals=dict(verdict.signals), usage=usage, **base)


def _resolve(model: str) -> str:
    from rag.provision.gguf import resolve_generator_model

    return resolve_generator_model(model)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 1)
