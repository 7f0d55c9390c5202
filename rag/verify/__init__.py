"""The answer check: every decision between answering and refusing lives here.

For one question, its passages and the generator's raw text:

1. *Explicit refusal.* A reply that says the documents do not hold the answer
   (:data:`REFUSAL_CUES`) is, by default, given a second, extractive try: small
   models often refuse answerable questions.
2. *Alignment* (``align.py``). Each answer sentence must be supported by one
   passage sentence: most of what it adds to the question occurs there, and
   every number and Latin name it holds occurs in that passage. Unsupported
   sentences are dropped; an answer left with none is refused.
3. *Two hard constraints.* The quoted sentence or the sentences beside it must
   share some words with the question, and a question asking for a year, date,
   count, amount of money or other number must get one.
4. *Answerability* (``answerability.py``). Signals such as whether the quoted
   sentence and its neighbours hold the question's subject and what it asks,
   whether the answer is of the asked type, retrieval scores and agreement with
   the extractive reader are combined by a logistic regression fitted on the
   tune splits into P(the answer is right). Below ``answer.strictness`` (default:
   the threshold fitted with the model) the reply is a refusal.

Before generation, :meth:`AnswerCheck.worth_generating` refuses at once when no
passage covers even ``answer.min_evidence`` of the question (fitted on tune so
that it loses almost no answerable question), which saves a generation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from rag.config import AnswerConfig
from rag.errors import ConfigError
from rag.generation import REFUSAL, ExtractiveGenerator
from rag.records import Citation, Passage
from rag.verify.align import render, strip_markers, verify_answer
from rag.verify.answerability import FEATURES, AnswerabilityModel, features, load_model, model_path_for
from rag.verify.checks import NUMERIC_TYPES, REFUSAL_CUES, evidence, expected_type

__all__ = ["AnswerCheck", "Verdict", "REFUSAL", "REFUSAL_CUES", "FEATURES", "HARD_REFUSALS", "is_explicit_refusal"]


#: Refusal reasons of the hard constraints: no threshold answers such a candidate.
HARD_REFUSALS = ("off_question", "type")


_PUNCTUATION = re.compile(r"[\s\W_]+")


def is_explicit_refusal(raw: str) -> bool:
    """Whether the generator's reply says nothing (empty, or only citation markers and
    punctuation, such as "[1]。") or says the documents do not hold the answer."""
    return not _PUNCTUATION.sub("", strip_markers(raw)) or any(cue in raw for cue in REFUSAL_CUES)



@dataclass(frozen=True)
class Verdict:
    """What the check decided, and why.

    ``candidate`` is the verified answer before the threshold (with markers; ""
    when nothing could be verified), ``score`` its calibrated P(right) (0 when
    there is no candidate or a hard constraint failed), ``reason`` why it was
    refused ("" when answered): "no_evidence", "unsupported", "off_question",
    "type" or "score".
    """

    text: str
    citations: tuple[Citation, ...]
    refused: bool
    score: float = 0.0
    candidate: str = ""
    reason: str = ""
    rescued: bool = False
    signals: dict[str, float] = field(default_factory=dict)


class AnswerCheck:
    """Decides, for one question at a time, whether and how to answer (see the module notes)."""

    def __init__(self, config: AnswerConfig | None = None, generator: str = "") -> None:
        """``generator``: the model whose answers are checked; without ``answer.model``, the
        bundled answerability model fitted for it (or the default generator's) is used."""
        self.config = config or AnswerConfig()
        #: The answerability model's file: ``answer.model``, or the one bundled for ``generator``.
        self.model_path = str(model_path_for(generator, self.config.model))
        self.model: AnswerabilityModel = load_model(self.model_path)
        strictness = self.config.strictness
        if strictness is not None and not (isinstance(strictness, (int, float)) and 0.0 <= strictness <= 1.0):
            raise ConfigError(f"answer.strictness must be a number from 0 (answer whatever is supported) to 1, got {strictness!r}")
        self.threshold = self.model.threshold if strictness is None else float(strictness)
        self._extractive = ExtractiveGenerator()

    def worth_generating(self, question: str, passages: Sequence[Passage]) -> bool:
        """False when no passage covers ``answer.min_evidence`` of the question."""
        return evidence(question, passages) >= self.config.min_evidence

    def refusal(self, reason: str) -> Verdict:
        return Verdict(text=REFUSAL, citations=(), refused=True, reason=reason)

    def check(self, question: str, raw: str, passages: Sequence[Passage], token_log_probs: Sequence[float] = ()) -> Verdict:
        """Verify ``raw`` (the generator's text) as an answer to ``question`` from ``passages``.

        ``token_log_probs``: the log-probabilities of the tokens of ``raw``, where the engine reports them.
        """
        explicit = is_explicit_refusal(raw)
        text, citations, dropped = ("", (), 0.0) if explicit else self._align(question, raw, passages)
        extractive = self._align(question, self._extractive.generate(question, passages), passages)
        rescued = False
        if explicit and self.config.rescue_explicit_refusals:
            text, citations, dropped = extractive
            rescued = bool(citations)
        if not citations:
            return self.refusal("unsupported")
        signals = features(question, passages, strip_markers(text), citations, extractive[1], explicit, dropped, token_log_probs)
        # Two hard constraints, then the score: an answer whose quoted sentence and neighbours
        # share nothing with the question does not answer it, and a question asking for a
        # number, amount or date is not answered without one.
        off_question, wrong_type = HARD_REFUSALS
        veto = (off_question if signals["quote_question"] == 0.0
                else wrong_type if expected_type(question) in NUMERIC_TYPES and not signals["type_ok"] else "")
        if veto:
            return Verdict(text=REFUSAL, citations=(), refused=True, candidate=text, reason=veto, rescued=rescued, signals=signals)
        score = self.model.score(signals)
        if score < self.threshold:
            return Verdict(text=REFUSAL, citations=(), refused=True, score=score, candidate=text, reason="score",
                           rescued=rescued, signals=signals)
        return Verdict(text=text, citations=citations, refused=False, score=score, candidate=text, rescued=rescued, signals=signals)

    def _align(self, question: str, raw: str, passages: Sequence[Passage]) -> tuple[str, tuple[Citation, ...], float]:
        if is_explicit_refusal(raw):
            return "", (), 0.0
        aligned = verify_answer(raw, passages, self.config.min_support, question)
        text, citations = render(aligned)
        dropped = sum(1 for a in aligned if not a.supported) / len(aligned) if aligned else 0.0
        return text, citations, dropped
