"""BM25 over jieba tokens (search mode), punctuation and whitespace removed.

The index is ``bm25s``'s: per token, a posting list of chunk positions (sorted)
with each chunk's precomputed BM25 term score, stored column-wise (CSC). Top-k
search runs MaxScore over the posting lists (Turtle & Flood 1995) instead of
summing every list into a score for every chunk. Query tokens are taken highest
score bound first (rare tokens) and their postings added up; ``theta``, a floor
for the final k-th best score, comes from the best partial scores (and, before
a long list would be scanned, from the best chunks' exact scores by binary
search in the other lists). Once the bounds of the tokens not taken sum to at
most ``theta``, no chunk that only they hold can enter the top k; the chunks
that can still reach ``theta`` are finished by binary search. The top k is the
same as scoring every chunk, and common tokens' long lists are not scanned.

Where numba is installed (a dependency), the search runs compiled
(`rag.lexical_kernels`, the same algorithm in one pass: 1M synthetic chunks,
p50 9.6 -> 3.8 ms); the NumPy path below stays for installs without it.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w")
_jieba = None
TERM_MAX_FILE = "term_max.npy"
#: Each chunk's tokens, one JSON list per line in chunk order; written for knowledge bases, so an
#: add or a removal tokenises only the chunks that are new (`rag.kb`).
TOKENS_FILE = "tokens.jsonl"
# Postings scanned in the time of one binary-search lookup of the best chunks (numpy call overhead).
LOOKUP_COST = 2000


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


@functools.cache
def _kernels():
    """`rag.lexical_kernels`, or None where numba is not installed (search then runs in NumPy calls)."""
    try:
        from rag import lexical_kernels
    except ImportError as e:
        logger.info("numba is not installed (%s): BM25 search runs in NumPy, about twice as slow at 1M chunks", e)
        return None
    except Exception as e:  # e.g. numba finds no writable cache folder (set NUMBA_CACHE_DIR)
        logger.warning("cannot load the compiled BM25 search (%s: %s); searching in NumPy. Setting NUMBA_CACHE_DIR "
                       "to a writable folder may help.", type(e).__name__, e)
        return None
    return lexical_kernels


def compile_search() -> bool:
    """Compile the search kernels now (or load them from numba's cache), so that no search waits
    for it; False where numba is not installed."""
    kernels = _kernels()
    if kernels is not None:
        kernels.warm_up()
    return kernels is not None


@functools.lru_cache(maxsize=256)
def _query_tokens(query: str) -> tuple[str, ...]:
    """`tokenize` for queries, cached: one query is searched and then scored on its candidates."""
    return tuple(tokenize(query))


def _term_max(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Largest score in each token's posting list (0 for empty lists)."""
    out = np.zeros(len(indptr) - 1, dtype=np.float32)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(np.asarray(data), np.asarray(indptr[nonempty]))
    return out


def _check_postings(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> None:
    """Refuse posting arrays that do not fit together (from different or damaged files): the
    compiled search trusts their bounds. Reads the offsets only, not the lists."""
    if (indptr.ndim != 1 or len(indptr) < 1 or len(indices) != len(data) or int(indptr[0]) != 0
            or int(indptr[-1]) != len(indices) or bool(np.any(np.diff(indptr) < 0))):
        raise ValueError(f"BM25 posting arrays do not fit together ({len(indptr)} list offsets ending at "
                         f"{int(indptr[-1]) if len(indptr) else None}, {len(indices)} positions, {len(data)} scores)")


class LexicalIndex:
    """BM25 index (``bm25s`` storage) with exact top-k search by MaxScore over posting lists."""

    def __init__(self, bm25, term_max: np.ndarray | None = None) -> None:
        if getattr(bm25, "nonoccurrence_array", None) is not None:
            raise ValueError(f"BM25 variant {bm25.method!r} scores chunks without the token; use the default 'lucene'")
        self._bm25 = bm25
        #: The chunks' tokens when built with ``keep_tokens`` (saved as TOKENS_FILE), else None.
        self.tokens: list[list[str]] | None = None
        s = bm25.scores
        # Plain views (of the memory maps, when loaded so): slicing a np.memmap object is slow.
        self._data, self._indices, self._indptr = (np.asarray(s[k]).view(np.ndarray) for k in ("data", "indices", "indptr"))
        _check_postings(self._indptr, self._indices, self._data)
        self._term_max = term_max if term_max is not None else _term_max(self._data, self._indptr)
        #: Search with the compiled kernels (`rag.lexical_kernels`), where numba is installed.
        self.compiled = _kernels() is not None
        # Zeroed score arrays (one float per chunk) for compiled searches, one per search running at once.
        self._scratch: list[np.ndarray] = []
        self._scratch_lock = threading.Lock()

    @classmethod
    def build(cls, texts: Sequence[str]) -> "LexicalIndex":
        return cls.from_tokens([tokenize(t) for t in texts])

    @classmethod
    def from_tokens(cls, token_lists: Sequence[list[str]], keep_tokens: bool = False) -> "LexicalIndex":
        """Index chunks already split by `tokenize` (e.g. in parallel, by a build engine).

        ``keep_tokens``: keep the lists and save them beside the index (TOKENS_FILE).
        """
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index([tokens or ["<empty>"] for tokens in token_lists], show_progress=False)
        index = cls(bm25)
        if keep_tokens:
            index.tokens = [list(tokens) for tokens in token_lists]
        return index

    def save(self, folder: Path) -> None:
        self._bm25.save(str(folder), show_progress=False)
        np.save(Path(folder) / TERM_MAX_FILE, self._term_max)
        if self.tokens is not None:
            with open(Path(folder) / TOKENS_FILE, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(tokens, ensure_ascii=False) + "\n" for tokens in self.tokens)

    @staticmethod
    def saved_tokens(folder: Path) -> list[list[str]] | None:
        """The token lists saved with the index in ``folder`` (None when it has none or they do not read)."""
        try:
            with open(Path(folder) / TOKENS_FILE, encoding="utf-8") as f:
                return [json.loads(line) for line in f]
        except (OSError, ValueError) as e:
            if not isinstance(e, FileNotFoundError):
                logger.warning("cannot read the saved tokens in %s (%s); tokenising again", folder, e)
            return None

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
        n_tokens = len(self._indptr) - 1  # bm25s's vocabulary may hold one more entry (""), with no list
        counts = Counter(i for i in self._bm25.get_tokens_ids(_query_tokens(query)) if i < n_tokens)
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        return ids, np.fromiter(counts.values(), dtype=np.float32, count=len(counts))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk (a dense array: use `search` for the top k)."""
        tokens = self._bm25.get_tokens_ids(_query_tokens(query))
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def _postings(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self._indptr[tid]), int(self._indptr[tid + 1])
        return self._indices[lo:hi], self._data[lo:hi]

    def _list_length(self, tid: int) -> int:
        return int(self._indptr[tid + 1] - self._indptr[tid])

    def _lookup(self, tid: int, positions: np.ndarray) -> np.ndarray:
        """Token ``tid``'s score in each of the sorted ``positions`` (0 where absent), by binary search."""
        docs, data = self._postings(tid)
        out = np.zeros(len(positions), dtype=np.float32)
        if len(docs) and len(positions):
            # Search with the lists' own dtype: a mixed-type search would first copy the whole list.
            at = np.minimum(np.searchsorted(docs, positions.astype(docs.dtype, copy=False)), len(docs) - 1)
            hit = docs[at] == positions
            out[hit] = data[at[hit]]
        return out

    def score_positions(self, query: str, positions: Sequence[int]) -> np.ndarray:
        """Exact BM25 scores of the given chunk positions, in their order."""
        positions = np.asarray(positions, dtype=np.int64)
        ids, weights = self._query_terms(query)
        if not len(ids) or not len(positions):
            return np.zeros(len(positions), dtype=np.float32)
        uniq, inverse = np.unique(positions, return_inverse=True)
        if self.compiled:
            return _kernels().score_sorted(self._indptr, self._indices, self._data, ids, weights, uniq)[inverse]
        scores = np.zeros(len(uniq), dtype=np.float32)
        for tid, w in zip(ids, weights):
            scores += w * self._lookup(tid, uniq)
        return scores[inverse]

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k chunk positions and scores, best first (chunks scoring zero omitted)."""
        ids, weights = self._query_terms(query)
        if not len(ids) or k < 1:
            return np.array([], dtype=np.int64), np.array([], dtype=np.float32)
        if self.compiled:
            upper = self._term_max[ids] * weights
            order = np.argsort(-upper, kind="stable")
            rest = np.append(np.cumsum(upper[order][::-1])[::-1], 0.0).astype(np.float32)
            with self._scratch_lock:
                acc = self._scratch.pop() if self._scratch else np.zeros(self.size, dtype=np.float32)
            found = _kernels().maxscore(self._indptr, self._indices, self._data, ids[order], weights[order], rest, k, acc)
            with self._scratch_lock:  # the search leaves it zeroed; one that raised does not come back
                self._scratch.append(acc)
            return found
        return self._search_numpy(ids, weights, k)

    def _search_numpy(self, ids: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` in NumPy calls, where numba is not installed (and as the benchmarks' baseline)."""
        upper = self._term_max[ids] * weights
        order = np.argsort(-upper, kind="stable")
        ids, weights = ids[order], weights[order]
        rest = np.append(np.cumsum(upper[order][::-1])[::-1], 0.0)  # rest[j]: bound of tokens j.. together
        acc = np.zeros(self.size, dtype=np.float32)  # partial scores, from the tokens taken so far
        best = np.array([], dtype=np.int64)  # the chunks of highest partial score, up to 2k of them
        theta, taken = 0.0, 0
        # Take tokens, highest bound first, while a chunk that only the others hold could still beat theta.
        while taken < len(ids) and rest[taken] > theta:
            docs, data = self._postings(ids[taken])
            acc[docs] += weights[taken] * data
            taken += 1
            pool = np.concatenate([best, docs])
            m = min(len(pool), 2 * k)
            best = np.unique(pool[np.argpartition(-acc[pool], m - 1)[:m]]) if m else best
            if len(best) < k:
                continue
            # Partial scores are floors of the exact ones, so their k-th best is a floor for the final k-th.
            theta = max(theta, float(np.partition(acc[best], len(best) - k)[len(best) - k]))
            if taken < len(ids) and rest[taken] > theta and self._list_length(ids[taken]) > LOOKUP_COST * (len(ids) - taken):
                # Before scanning a long list, try a higher floor: the best chunks' exact scores.
                exact = acc[best]
                for j in range(taken, len(ids)):
                    exact = exact + weights[j] * self._lookup(ids[j], best)
                theta = max(theta, float(np.partition(exact, len(exact) - k)[len(exact) - k]))
        cand = np.flatnonzero((acc > 0) & (acc >= theta - rest[taken]))
        scores = acc[cand]
        for j in range(taken, len(ids)):  # the other tokens, only for chunks that can still reach theta
            keep = scores + rest[j] >= theta
            cand, scores = cand[keep], scores[keep]
            scores += weights[j] * self._lookup(ids[j], cand)
        top, best_scores = self.top(scores, k)
        return cand[top], best_scores

    @staticmethod
    def top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return top, scores[top]
