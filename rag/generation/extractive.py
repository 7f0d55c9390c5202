"""The model-free backend: quote the passage sentence most likely to hold the answer.

Every passage sentence sharing at least ``min_shared_bigrams`` character bigrams
with the question is a candidate. A small logistic regression over explainable
signals (:data:`READER_SIGNALS`) ranks them: how much of the question the sentence
covers, plainly and weighted by how rare each bigram is among the candidates; what the
sentences beside it and its article's title add; the passage's rank; whether it holds
the kind of answer asked for (a year, a count, a person…); and how much it says beyond
the question. Its weights (``reader.json`` beside this module) were fitted on the tune
splits by ``benchmarks/reader_fit.py``: the label is whether the sentence holds a gold
answer. It needs nothing beyond the standard library and jieba.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.chunking import split_sentences
from rag.errors import ConfigError, ModelError
from rag.generation.base import Generator
from rag.generation.prompt import REFUSAL, Messages
from rag.normalize import fold_script
from rag.records import Passage
from rag.textsim import bigrams, content, question_core

# A sentence ends at Chinese or Western end punctuation or a line break, with the closing
# quotes and brackets after it. A "." ends one only before whitespace or the end, and not
# after a lone capital (an initial: "Andrew W. Mellon"), so "3.5亿" and "e.g" stay whole
# and English text splits. A sentence that leaves a bracket open runs on to where it closes
# ("（学名：X；毛利语：Y），是…" is one sentence), unless that makes it over
# :data:`_MAX_RUN_ON` characters (a bracket that never closes).
_SENTENCE_END = re.compile(r"(?:[。！？!?；;]+|…+|\n+|(?<![^A-Za-z][A-Z])\.+(?=\s|$))[”’」』）)\]】]*")
_OPENING, _CLOSING_BRACKETS = "（(【[", "）)】]"
_MAX_RUN_ON = 150
_CLOSING = "。！？!?；;，,、. "

READER_PATH = Path(__file__).with_name("reader.json")
READER_VERSION = 1
#: The signals of one candidate sentence, in the order of the reader's weights (each in [0, 1]).
READER_SIGNALS = (
    "cover",        # share of the question's bigrams (interrogatives removed) in the sentence
    "cover_idf",    # … each weighted by how few candidate sentences hold it (rare words tell more)
    "cover_sq",     # cover squared: a sentence holding nearly all of the question stands out
    "previous",     # share of the question's bigrams the sentence lacks that the one before it holds
    "next",         # … that the one after it holds
    "title",        # … that its passage's title and heading context hold (an article names its subject once)
    "rank",         # 1 / retrieval rank of its passage
    "first",        # it opens its passage
    "type_known",   # the question asks for a checkable kind of answer (year, count, person…)
    "type_ok",      # … and the sentence holds one
    "asked",        # share of what is asked (the question's bigrams outside its subject) in the sentence
    "subject",      # share of the subject's bigrams in the sentence, the one before it or the title
    "new",          # how much the sentence says beyond the question (characters, log-scaled)
)


@dataclass(frozen=True)
class ReaderModel:
    """Logistic-regression weights over :data:`READER_SIGNALS` (only the ranking matters)."""

    weights: tuple[float, ...]
    intercept: float = 0.0
    signals: tuple[str, ...] = READER_SIGNALS
    fitted_on: str = ""

    def score(self, values: dict[str, float]) -> float:
        return self.intercept + sum(w * values[name] for w, name in zip(self.weights, self.signals))

    def to_dict(self) -> dict:
        return {"version": READER_VERSION, "signals": list(self.signals), "weights": [round(w, 6) for w in self.weights],
                "intercept": round(self.intercept, 6), "fitted_on": self.fitted_on}


@lru_cache(maxsize=4)
def load_reader(path: str = "") -> ReaderModel:
    """The reader's weights at ``path`` (default: the bundled ``reader.json``)."""
    path = path or str(READER_PATH)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the extractive reader's weights {path}: {e}; refit them with benchmarks/reader_fit.py") from e
    names = tuple(data.get("signals", ()))
    if data.get("version") != READER_VERSION or set(names) - set(READER_SIGNALS) or len(names) != len(data.get("weights", ())):
        raise ConfigError(f"the extractive reader's weights {path} are for other signals; refit them with benchmarks/reader_fit.py")
    return ReaderModel(tuple(float(w) for w in data["weights"]), float(data.get("intercept", 0.0)), names, str(data.get("fitted_on", "")))


@dataclass(frozen=True)
class Candidate:
    """One passage sentence the reader may quote."""

    number: int      # 1-based position of its passage
    position: int    # its index among the passage's sentences
    sentence: str
    shared: int      # character bigrams shared with the question
    signals: dict[str, float]


def sentences(text: str) -> list[str]:
    """The reader's sentences of ``text`` (stripped, empty ones left out)."""
    out: list[str] = []
    pending = ""
    for start, end in split_sentences(text, _SENTENCE_END):
        pending += text[start:end]
        if sum(pending.count(c) for c in _OPENING) <= sum(pending.count(c) for c in _CLOSING_BRACKETS) \
                or len(pending) >= _MAX_RUN_ON or end == len(text):
            if pending.strip():
                out.append(pending.strip())
            pending = ""
    return out


def candidates(question: str, passages: Sequence[Passage], min_shared_bigrams: int = 1) -> list[Candidate]:
    """Every passage sentence sharing ``min_shared_bigrams`` bigrams with ``question``, with its signals."""
    from rag.rewrite import subject_of  # jieba-based; imported late, as rag.verify is
    from rag.verify.checks import answer_has_expected_type, expected_type

    wanted = bigrams(question_core(question))
    folded = fold_script(question)
    if not wanted:
        return []
    by_passage = [sentences(p.text) for p in passages]
    flat = [(n, i, s, bigrams(s)) for n, ss in enumerate(by_passage, start=1) for i, s in enumerate(ss)]
    rows = [row for row in flat if len(wanted & row[3]) >= min_shared_bigrams]
    if not rows:
        return []
    held = Counter(b for *_, bs in flat for b in bs & wanted)
    weight = {b: math.log((len(flat) + 1) / (1 + held[b])) + 1.0 for b in wanted}
    total = sum(weight.values())
    subject = bigrams(subject_of(folded))
    asked = wanted - subject
    kind = expected_type(question)
    titles = [bigrams(f"{p.title} {p.chunk.context}") for p in passages]
    size = len(wanted)
    found = []
    for n, i, s, bs in rows:
        shared = wanted & bs
        before = bigrams(by_passage[n - 1][i - 1]) if i > 0 else set()
        after = bigrams(by_passage[n - 1][i + 1]) if i + 1 < len(by_passage[n - 1]) else set()
        new = content("".join(ch for ch in fold_script(s) if ch not in folded))
        cover = len(shared) / size
        signals = {
            "cover": cover,
            "cover_idf": sum(weight[b] for b in shared) / total,
            "cover_sq": cover * cover,
            "previous": len((wanted & before) - bs) / size,
            "next": len((wanted & after) - bs) / size,
            "title": len((wanted & titles[n - 1]) - bs) / size,
            "rank": 1.0 / n,
            "first": 1.0 if i == 0 else 0.0,
            "type_known": 1.0 if kind else 0.0,
            "type_ok": 1.0 if kind and answer_has_expected_type(question, s) else 0.0,
            "asked": len(asked & bs) / len(asked) if asked else 1.0,
            "subject": len(subject & (bs | before | titles[n - 1])) / len(subject) if subject else 1.0,
            "new": min(1.0, math.log1p(len(new)) / math.log1p(100)),
        }
        found.append(Candidate(n, i, s, len(shared), signals))
    return found


class ExtractiveGenerator(Generator):
    """Quotes the passage sentence the reader's model ranks first (see the module notes).

    Ties go to the higher-ranked passage, then to the earlier sentence. When no sentence
    shares ``min_shared_bigrams`` bigrams with the question it returns :data:`REFUSAL`.
    """

    backend = "extractive"
    free_form = False

    def __init__(self, max_sentences: int = 1, min_shared_bigrams: int = 2, reader: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_sentences = max_sentences
        self.min_shared_bigrams = min_shared_bigrams
        self.reader = load_reader(reader)

    def generate(self, question: str, passages: Sequence[Passage]) -> str:
        found = candidates(question, passages, self.min_shared_bigrams)
        if not found:
            return REFUSAL
        ranked = sorted(found, key=lambda c: (-self.reader.score(c.signals), c.number, c.position))[: self.max_sentences]
        return "".join(_cite(c.sentence, c.number) for c in sorted(ranked, key=lambda c: (c.number, c.position)))

    def stream(self, question: str, passages: Sequence[Passage], log_probs: list[float] | None = None,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        yield self.generate(question, passages)

    def complete(self, messages: Messages) -> str:
        raise ModelError("the extractive backend cannot follow free-form prompts; use the causal or seq2seq backend")


def _cite(sentence: str, number: int) -> str:
    body = sentence.rstrip(_CLOSING)
    return f"{body}[{number}]{sentence[len(body):].strip() or '。'}"
