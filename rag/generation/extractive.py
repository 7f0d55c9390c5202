"""The model-free backend: quote the passage sentence closest to the question."""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from rag.errors import ModelError
from rag.generation.base import Generator
from rag.generation.prompt import REFUSAL, Messages
from rag.records import Passage
from rag.textsim import bigrams, question_core

# A sentence ends at Chinese or Western end punctuation; a "." ends one only before
# whitespace or the end, so "3.5亿" and "e.g" stay whole and English text splits.
_SENTENCE_RE = re.compile(r"(?:[^。！？!?；;\n.]|\.(?=\S))+[。！？!?；;.]*")
_CLOSING = "。！？!?；;，,、. "


class ExtractiveGenerator(Generator):
    """Quotes the passage sentence sharing most character bigrams with the question.

    Needs nothing beyond the standard library. Ties go to the higher-ranked
    passage, then to the earlier sentence. With fewer than ``min_shared_bigrams``
    shared bigrams it returns :data:`REFUSAL`.
    """

    backend = "extractive"
    free_form = False

    def __init__(self, max_sentences: int = 1, min_shared_bigrams: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_sentences = max_sentences
        self.min_shared_bigrams = min_shared_bigrams

    def generate(self, question: str, passages: Sequence[Passage]) -> str:
        wanted = bigrams(question_core(question))
        scored: list[tuple[float, int, int, str]] = []
        for number, passage in enumerate(passages, start=1):
            for position, match in enumerate(_SENTENCE_RE.finditer(passage.text)):
                sentence = match.group().strip()
                overlap = len(wanted & bigrams(sentence))
                if overlap >= self.min_shared_bigrams:
                    scored.append((-overlap, number, position, sentence))
        if not scored:
            return REFUSAL
        best = sorted(scored)[: self.max_sentences]
        return "".join(_cite(sentence, number) for _, number, _, sentence in sorted(best, key=lambda s: s[1:3]))

    def stream(self, question: str, passages: Sequence[Passage], log_probs: list[float] | None = None,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        yield self.generate(question, passages)

    def complete(self, messages: Messages) -> str:
        raise ModelError("the extractive backend cannot follow free-form prompts; use the causal or seq2seq backend")


def _cite(sentence: str, number: int) -> str:
    body = sentence.rstrip(_CLOSING)
    return f"{body}[{number}]{sentence[len(body):].strip() or '。'}"
