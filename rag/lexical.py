"""BM25 over jieba tokens (search mode), punctuation and whitespace removed.

The index is ``bm25s``'s: per token, a posting list of chunk positions (sorted)
with each chunk's precomputed BM25 term score, stored column-wise (CSC). Top-k
search does not score every chunk: it runs MaxScore over the posting lists
(Turtle & Flood 1995). Query tokens are taken rarest first (highest upper bound
of their scores); the chunks they hold are scored exactly on every query token
(binary search in the other lists), and once the upper bounds of the tokens
not yet taken sum to less than the k-th best exact score so far, no chunk that
only they hold can enter the top k. The result is the same top k as scoring
every chunk, at a cost that follows the rare tokens' posting lists rather than
the corpus size.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w")
_jieba = None
TERM_MAX_FILE = "term_max.npy"
# Past this share of the corpus in the candidate set, scoring every chunk at once is cheaper.
DENSE_SHARE = 0.25


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


def _term_max(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Largest score in each token's posting list (0 for empty lists)."""
    out = np.zeros(len(indptr) - 1, dtype=np.float32)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(np.asarray(data), np.asarray(indptr[nonempty]))
    return out


class LexicalIndex:
    """BM25 index (``bm25s`` storage) with exact top-k search by MaxScore over posting lists."""

    def __init__(self, bm25, term_max: np.ndarray | None = None) -> None:
        if getattr(bm25, "nonoccurrence_array", None) is not None:
            raise ValueError(f"BM25 variant {bm25.method!r} scores chunks without the token; use the default 'lucene'")
        self._bm25 = bm25
        s = bm25.scores
        self._data, self._indices, self._indptr = s["data"], s["indices"], s["indptr"]
        self._term_max = term_max if term_max is not None else _term_max(self._data, self._indptr)

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
        np.save(Path(folder) / TERM_MAX_FILE, self._term_max)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> "LexicalIndex":
        """Load; with ``mmap`` the posting lists stay on disk and are paged in as queries read them."""
        import bm25s

        bm25 = bm25s.BM25.load(str(folder), show_progress=False, mmap=mmap)
        term_max = None
        path = Path(folder) / TERM_MAX_FILE
        if path.exists():  # indexes built before MaxScore search have none: computed on load
            term_max = np.load(path)
            if len(term_max) != len(bm25.scores["indptr"]) - 1:
                raise ValueError(f"{path} has {len(term_max)} tokens, the BM25 vocabulary {len(bm25.scores['indptr']) - 1}")
        return cls(bm25, term_max)

    @property
    def size(self) -> int:
        return int(self._bm25.scores["num_docs"])

    def _query_terms(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the query's in-vocabulary tokens and how often each occurs."""
        counts = Counter(self._bm25.get_tokens_ids(tokenize(query)))
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        return ids, np.fromiter(counts.values(), dtype=np.float32, count=len(counts))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk (a dense array: use `search` for the top k)."""
        tokens = self._bm25.get_tokens_ids(tokenize(query))
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def _score_sorted(self, positions: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Exact scores of sorted, unique ``positions`` (binary search in each token's list)."""
        out = np.zeros(len(positions), dtype=np.float32)
        for tid, w in zip(ids, weights):
            lo, hi = int(self._indptr[tid]), int(self._indptr[tid + 1])
            docs = self._indices[lo:hi]
            at = np.searchsorted(docs, positions)
            inside = at < len(docs)
            hit = np.zeros(len(positions), dtype=bool)
            hit[inside] = docs[at[inside]] == positions[inside]
            out[hit] += w * self._data[lo:hi][at[hit]]
        return out

    def score_positions(self, query: str, positions: Sequence[int]) -> np.ndarray:
        """Exact BM25 scores of the given chunk positions, in their order."""
        positions = np.asarray(positions, dtype=np.int64)
        ids, weights = self._query_terms(query)
        if not len(ids) or not len(positions):
            return np.zeros(len(positions), dtype=np.float32)
        uniq, inverse = np.unique(positions, return_inverse=True)
        return self._score_sorted(uniq, ids, weights)[inverse]

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k chunk positions and scores, best first (chunks scoring zero omitted)."""
        ids, weights = self._query_terms(query)
        if not len(ids) or k < 1:
            return np.array([], dtype=np.int64), np.array([], dtype=np.float32)
        upper = self._term_max[ids] * weights
        order = np.argsort(-upper, kind="stable")
        ids, weights, upper = ids[order], weights[order], upper[order]
        rest = np.concatenate([np.cumsum(upper[::-1])[::-1], [0.0]])  # rest[j]: bound of tokens j.. together
        lengths = self._indptr[ids + 1] - self._indptr[ids]
        cand = np.array([], dtype=np.int64)
        cand_scores = np.array([], dtype=np.float32)
        theta, taken = 0.0, 0
        while taken < len(ids) and rest[taken] >= theta:
            # Take the next token, and with it every token up to where the bound drops below theta.
            stop = taken + 1
            if len(cand) + int(lengths[taken:stop].sum()) > DENSE_SHARE * self.size:
                return self.top(self.scores(query), k)
            lo, hi = int(self._indptr[ids[taken]]), int(self._indptr[ids[taken] + 1])
            new = np.setdiff1d(np.asarray(self._indices[lo:hi], dtype=np.int64), cand, assume_unique=True)
            taken = stop
            if len(new):
                new_scores = self._score_sorted(new, ids, weights)
                cand = np.concatenate([cand, new])
                cand_scores = np.concatenate([cand_scores, new_scores])
                order = np.argsort(cand, kind="stable")
                cand, cand_scores = cand[order], cand_scores[order]
            if len(cand) >= k:
                theta = float(np.partition(cand_scores, len(cand) - k)[len(cand) - k])
        top, scores = self.top(cand_scores, k)
        return cand[top], scores

    @staticmethod
    def top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return top, scores[top]
