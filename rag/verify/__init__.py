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
   count, amount of money or other number must get one. (A third, that they hold
   some of what is asked, ``asked_cover`` > 0, was tried on tune with the reader's
   sentence first: cross-validated utility 0.7505 against 0.758 without it, once
   ``asked_cover`` reads the question's phrases, ``rag.textsim.phrase_bigrams``.)
4. *Answerability* (``answerability.py``). Signals such as whether the quoted
   sentence and its neighbours hold the question's subject and what it asks,
   whether the answer is of the asked type, retrieval scores and agreement with
   the extractive reader are combined by a logistic regression fitted on the
   tune splits into P(the answer is right). Below ``answer.strictness`` (default:
   the threshold fitted with the model) the reply is a refusal.
5. *Two candidates, the quote first.* Where the model was fitted with the ``extractive``
   signal, the extractive reader's sentence is judged beside the generator's answer.
   The reader's sentence answers where it clears the threshold; where it does not, the
   higher scored of the two answers if it clears it. The reader's candidate does not
   depend on the generator, so :meth:`AnswerCheck.quote` judges it before generation and
   the pipeline skips generating when it clears. On the tune splits the reader's sentence
   holds a gold answer more often than the 0.5B generator's reply (encyclopedia 0.70
   against 0.43), and this order beat the generator's answer first: cross-validated
   utility 0.731 against 0.667 (``benchmarks/answer_check_fit.py``).

Before generation, :meth:`AnswerCheck.worth_generating` refuses at once when no
passage covers even ``answer.min_evidence`` of the question (fitted on tune so
that it loses almost no answerable question), which saves a generation.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Sequence

from rag.config import AnswerConfig
from rag.errors import ConfigError
from rag.generation import REFUSAL, ExtractiveGenerator
from rag.normalize import is_cjk
from rag.records import Citation, Passage
from rag.verify.align import render, strip_markers, verify_answer
from rag.verify.answerability import FEATURES, AnswerabilityModel, features, load_model, model_path_for
from rag.verify.checks import NUMERIC_TYPES, REFUSAL_CUES, evidence, expected_type

__all__ = ["AnswerCheck", "Verdict", "REFUSAL", "REFUSAL_CUES", "FEATURES", "HARD_REFUSALS", "is_explicit_refusal"]


#: Refusal reasons of the hard constraints: no threshold answers such a candidate.
HARD_REFUSALS = ("off_question", "type")


_PUNCTUATION = re.compile(r"[\s\W_]+")


def _mostly_cjk(text: str) -> bool:
    """Whether most of ``text``'s letters are Chinese characters. The signals that weigh the
    reader's sentence against the generator's answer are character bigrams, which tell apart
    two Chinese sentences but not two English ones of the same passage."""
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and sum(map(is_cjk, letters)) * 2 >= len(letters)


def _clears_as_quote(verdict: "Verdict", threshold: float) -> bool:
    """The reader's own candidate (not a rescue of a refusal), unvetoed, at or above ``threshold``."""
    return verdict.extractive and not verdict.rescued and not verdict.reason and verdict.score >= threshold


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
    #: The candidate is the extractive reader's sentence (a rescue, or picked over the generator's).
    extractive: bool = False
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
        found = self.candidates(question, raw, passages, token_log_probs)
        if not found:
            return self.refusal("unsupported")
        # The reader's sentence where it clears the threshold; else the most probably right
        # candidate (a vetoed one scores 0), which may still fall short.
        quoted = next((v for v in found if _clears_as_quote(v, self.threshold)), None)
        verdict = quoted or max(found, key=lambda v: v.score)
        if verdict.reason or verdict.score < self.threshold:
            return dataclasses.replace(verdict, text=REFUSAL, citations=(), refused=True, reason=verdict.reason or "score")
        return verdict

    def offers_reader(self, question: str) -> bool:
        """Whether the reader's sentence is weighed as a candidate: where the answerability model
        was fitted to weigh it (it has the ``extractive`` signal) and the question is Chinese."""
        return "extractive" in self.model.features and _mostly_cjk(question)

    def quote(self, question: str, passages: Sequence[Passage]) -> Verdict | None:
        """The extractive reader's sentence where it is offered and clears the threshold on its
        own, else None. :meth:`check` answers with it whatever the generator says, so a caller
        holding it need not generate."""
        if not self.offers_reader(question):
            return None
        text, citations, dropped = self._align(question, self._extractive.generate(question, passages), passages)
        if not citations:
            return None
        verdict = self._judge(question, passages, text, citations, citations, False, dropped, (), True)
        return verdict if _clears_as_quote(verdict, self.threshold) else None

    def candidates(self, question: str, raw: str, passages: Sequence[Passage], token_log_probs: Sequence[float] = (),
                   reader: bool | None = None) -> list[Verdict]:
        """The candidate answers, each judged but not yet held to the threshold: the generator's
        (or, when it refused, the extractive reader's rescue), then the extractive reader's where
        ``reader`` (default: :meth:`offers_reader`)."""
        if reader is None:
            reader = self.offers_reader(question)
        explicit = is_explicit_refusal(raw)
        text, citations, dropped = ("", (), 0.0) if explicit else self._align(question, raw, passages)
        extractive = self._align(question, self._extractive.generate(question, passages), passages)
        rescued = False
        if explicit and self.config.rescue_explicit_refusals:
            text, citations, dropped = extractive
            rescued = bool(citations)
        found = []
        if citations:
            found.append(self._judge(question, passages, text, citations, extractive[1], explicit, dropped, token_log_probs, rescued))
        if extractive[1] and reader:
            found.append(self._judge(question, passages, *extractive[:2], extractive[1], False, extractive[2], (), True))
        return found

    def _judge(self, question: str, passages: Sequence[Passage], text: str, citations: tuple[Citation, ...],
               extractive: tuple[Citation, ...], explicit: bool, dropped: float, token_log_probs: Sequence[float],
               from_reader: bool) -> Verdict:
        """One candidate's signals, hard constraints and score (``reason`` says which constraint failed)."""
        signals = features(question, passages, strip_markers(text), citations, extractive, explicit, dropped, token_log_probs, from_reader)
        # Two hard constraints, then the score: an answer whose quoted sentence and neighbours
        # share nothing with the question does not answer it, and a question asking for a
        # number, amount or date is not answered without one.
        off_question, wrong_type = HARD_REFUSALS
        veto = (off_question if signals["quote_question"] == 0.0
                else wrong_type if expected_type(question) in NUMERIC_TYPES and not signals["type_ok"] else "")
        score = 0.0 if veto else self.model.score(signals)
        return Verdict(text=text, citations=citations, refused=False, score=score, candidate=text, reason=veto,
                       rescued=from_reader and explicit, extractive=from_reader, signals=signals)

    def _align(self, question: str, raw: str, passages: Sequence[Passage]) -> tuple[str, tuple[Citation, ...], float]:
        if is_explicit_refusal(raw):
            return "", (), 0.0
        aligned = verify_answer(raw, passages, self.config.min_support, question)
        text, citations = render(aligned)
        dropped = sum(1 for a in aligned if not a.supported) / len(aligned) if aligned else 0.0
        return text, citations, dropped
