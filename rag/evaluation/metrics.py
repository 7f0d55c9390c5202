"""Pure metric functions sharing one answer normaliser."""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Iterable, Sequence

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """NFKC, lower case, whitespace and punctuation removed."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text or "").lower())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """True when any non-empty gold answer occurs in ``text`` after normalisation."""
    norm = normalize_answer(text)
    return any(a and a in norm for a in (normalize_answer(x) for x in answers))


def relevance(passages: Sequence[tuple[str, str]], gold_doc_ids: set[str], answers: Sequence[str]) -> list[bool]:
    """Per retrieved ``(doc_id, text)``: from a gold doc and containing a gold answer."""
    return [doc_id in gold_doc_ids and contains_answer(text, answers) for doc_id, text in passages]


def hit_at(rel: Sequence[bool], k: int) -> float:
    return 1.0 if any(rel[:k]) else 0.0


def mrr_at(rel: Sequence[bool], k: int) -> float:
    for rank, r in enumerate(rel[:k], start=1):
        if r:
            return 1.0 / rank
    return 0.0


def ndcg_at(rel: Sequence[bool], k: int, n_relevant: int | None = None) -> float:
    """Binary-relevance nDCG@k; the ideal ranking puts ``n_relevant`` hits first
    (default: the number of hits found in the list)."""
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(rel[:k]) if r)
    n = sum(1 for r in rel if r) if n_relevant is None else n_relevant
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(n, k)))
    return dcg / ideal if ideal > 0 else 0.0
