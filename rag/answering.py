"""Turn retrieved passages into a verified, cited answer, or an honest refusal.

Steps for one question: clean it; rewrite a follow-up into a standalone
question; retrieve; refuse early when no passage covers the question; generate
(streaming); verify every answer sentence against the passages (citations.py);
refuse when nothing the model wrote is supported or when the supporting text
does not address the question.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Sequence

from rag.citations import render, verify_answer
from rag.config import GenerationConfig
from rag.errors import ConfigError, ModelError
from rag.generation import REFUSAL as REFUSAL_TEXT
from rag.generation import build_generator
from rag.questions import clean_question
from rag.records import Answer, Passage
from rag.refusal import RefusalPolicy, answer_has_expected_type, event_mentioned, evidence, grounding, subject_found
from rag.rewrite import rewrite_question, subject_of

logger = logging.getLogger(__name__)

_REFUSAL_HINTS = ("无法回答", "没有提到", "未提及", "没有提及", "无法确定", "没有相关", "未提供")


class Answerer:
    """Holds generators (loaded once, lazily) and answers questions."""

    def __init__(self, retrieve: Callable[[str, int | None], list[Passage]], config: GenerationConfig, policy: RefusalPolicy | None = None) -> None:
        self._retrieve = retrieve
        self.config = config
        self.policy = policy or RefusalPolicy()
        self._generators: dict[tuple[str, str], object] = {}
        self._notices: dict[tuple[str, str], str] = {}  # why a backend fell back to extractive
        self._lock = threading.Lock()

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
        """The generator for ``backend``; falls back to extractive (with a notice) if it cannot load."""
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
                        "max_new_tokens": self.config.max_new_tokens, "prompt_passages": self.config.prompt_passages or None}
                    if backend == "causal":
                        kwargs.update(engine=self.config.engine, prompt_lookup=self.config.prompt_lookup)
                    # llama.cpp reads the GGUF itself: no transformers folder to provision.
                    if model and not (backend == "causal" and self.config.engine == "llamacpp"):
                        model = _resolve(model)
                    self._generators[key] = build_generator(backend, model or None, **kwargs)
                except (ModelError, ConfigError) as e:
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
        ev = evidence(standalone, passages)
        timings["evidence"] = round(ev, 3)
        if ev < self.policy.min_evidence:
            timings["total_ms"] = _ms(t0, time.perf_counter())
            yield REFUSAL_TEXT
            yield Answer(text=REFUSAL_TEXT, refused=True, timings=timings, **base)
            return
        pieces: list[str] = []
        first = None
        for piece in gen.stream(standalone, passages):
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
            yield piece
        t_gen = time.perf_counter()
        raw = "".join(pieces).strip()
        timings.update(first_token_ms=_ms(t_ret, first or t_gen), generate_ms=_ms(t_ret, t_gen))
        text, citations, refused = self._verify(standalone, raw, passages)
        if refused and _explicit_refusal(raw) and name != "extractive" and self.policy.rescue_explicit_refusals:
            # Small models often refuse answerable questions; an explicit refusal (not a
            # hallucination, which is a sign the answer is missing) gets a second, extractive
            # try that must pass the same checks. Measured: README "Measurements".
            rescued = self._extractive.generate(standalone, passages)
            text2, citations2, refused2 = self._verify(standalone, rescued, passages)
            if not refused2:
                text, citations, refused = text2, citations2, False
                timings["rescued"] = 1
        timings["verify_ms"] = _ms(t_gen, time.perf_counter())
        timings["total_ms"] = _ms(t0, time.perf_counter())
        logger.debug("raw answer %r -> %r (refused=%s)", raw, text, refused)
        yield Answer(text=text, citations=citations, refused=refused, timings=timings, **base)

    @property
    def _extractive(self):
        return self._generator("extractive")[0]

    def _verify(self, question: str, raw: str, passages: Sequence[Passage]):
        if _explicit_refusal(raw):
            return REFUSAL_TEXT, (), True
        aligned = verify_answer(raw, passages, self.policy.min_support, question)
        text, citations = render(aligned)
        if not citations:
            return REFUSAL_TEXT, (), True
        cited = [passages[c.marker - 1] for c in citations]
        policy = self.policy
        if (
            grounding(question, cited) < policy.min_grounding
            or (policy.check_subject and not subject_found(subject_of(question), cited))
            or (policy.check_answer_type and not answer_has_expected_type(question, text))
            or (policy.check_event and not event_mentioned(question, [c.quote for c in citations]))
        ):
            return REFUSAL_TEXT, (), True
        return text, citations, False


def _explicit_refusal(raw: str) -> bool:
    return not raw.strip() or any(h in raw for h in _REFUSAL_HINTS)


def _resolve(model: str) -> str:
    from rag.provision.gguf import resolve_generator_model

    return resolve_generator_model(model)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 1)
