"""BM25 over jieba tokens (search mode), punctuation and whitespace removed."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w")
_jieba = None


def _tokenizer():
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return _jieba


def tokenize(text: str) -> list[str]:
    """jieba search-mode tokens, lower-cased, without punctuation-only tokens."""
    return [t.lower() for t in _tokenizer().cut_for_search(text) if _WORD.search(t)]


class LexicalIndex:
    """Thin wrapper over ``bm25s`` that returns a score for every chunk."""

    def __init__(self, bm25) -> None:
        self._bm25 = bm25

    @classmethod
    def build(cls, texts: Sequence[str]) -> "LexicalIndex":
        return cls.from_tokens([tokenize(t) for t in texts])

    @classmethod
    def from_tokens(cls, token_lists: Sequence[list[str]]) -> "LexicalIndex":
        """Index chunks already split by `tokenize` (e.g. in parallel, by a build engine)."""
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index([tokens or ["<empty>"] for tokens in token_lists], show_progress=False)
        return cls(bm25)

    def save(self, folder: Path) -> None:
        self._bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> "LexicalIndex":
        import bm25s

        return cls(bm25s.BM25.load(str(folder), show_progress=False))

    @property
    def size(self) -> int:
        return int(self._bm25.scores["num_docs"])

    def scores(self, query: str) -> np.ndarray:
        tokens = tokenize(query)
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k chunk positions and scores (positions of zero-score chunks omitted)."""
        return self.top(self.scores(query), k)

    @staticmethod
    def top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return top, scores[top]
