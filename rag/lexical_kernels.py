"""Compiled BM25 top-k search over ``bm25s``'s posting lists (numba), for `rag.lexical`.

The same MaxScore search as `LexicalIndex.search`'s NumPy path, in one compiled
pass instead of dozens of NumPy calls per query (1M synthetic chunks: p50 about
half; ``benchmarks/retrieval_scale.py``):

1. *Essential tokens.* Tokens are taken highest score bound first and their
   postings added into ``acc`` (scratch of one float per chunk, one array per
   search running at once, left zeroed). ``theta``, the k-th best partial score, is a floor for
   the final k-th best; it is kept from the best chunks so far plus the list
   just added, since only those chunks' scores moved. Tokens stop being taken
   once the bounds of the others sum to at most ``theta``. The best chunks are
   then scored in full, and the k-th of those exact scores raises ``theta``.
2. *Candidates.* Chunks whose partial score plus those bounds can still reach
   ``theta``, in position order (one branch-free pass over ``acc``, then zeroed).
3. *The other tokens, chunk at a time.* Each candidate's score is finished by
   galloping search in the remaining lists (candidates ascend, so each list's
   cursor only moves forward), stopping as soon as the bounds left cannot lift
   it to ``theta``. Finished chunks go into a heap of the k best, whose minimum
   raises ``theta`` as the search goes.

Ties are broken by position (the lower first), so the result is deterministic.
Functions are compiled on first use and cached beside this file (or in numba's
user cache): `warm_up` compiles them ahead, as ``rag models provision`` does.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _gallop(docs, lo, hi, target):
    """First position in ``docs[lo:hi]`` (sorted) holding a value >= ``target``; ``hi`` when none."""
    step = 1
    end = lo
    while end < hi and docs[end] < target:
        lo = end + 1
        end = lo + step
        step *= 2
    if end > hi:
        end = hi
    while lo < end:
        mid = (lo + end) >> 1
        if docs[mid] < target:
            lo = mid + 1
        else:
            end = mid
    return lo


@njit(cache=True, nogil=True)
def _sift_down(heap_s, heap_p, i, n):
    """Restore the min-heap (by score, then by position descending) below node ``i``."""
    while True:
        low = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < n and (heap_s[child] < heap_s[low] or (heap_s[child] == heap_s[low] and heap_p[child] > heap_p[low])):
                low = child
        if low == i:
            return
        heap_s[i], heap_s[low] = heap_s[low], heap_s[i]
        heap_p[i], heap_p[low] = heap_p[low], heap_p[i]
        i = low


@njit(cache=True, nogil=True)
def _sift_up(heap_s, heap_p, i):
    while i > 0:
        parent = (i - 1) // 2
        if heap_s[i] < heap_s[parent] or (heap_s[i] == heap_s[parent] and heap_p[i] > heap_p[parent]):
            heap_s[i], heap_s[parent] = heap_s[parent], heap_s[i]
            heap_p[i], heap_p[parent] = heap_p[parent], heap_p[i]
            i = parent
        else:
            return


@njit(cache=True, nogil=True)
def maxscore(indptr, indices, data, ids, weights, rest, k, acc):
    """Top ``k`` (positions, scores), best first, of the query ``ids`` (token ids, highest bound
    first) with ``weights`` (query counts); ``rest[j]`` is the sum of the bounds of tokens j.. and
    ``rest[len(ids)] == 0``. ``acc`` is zeroed scratch of one float32 per chunk, left zeroed."""
    n_terms = len(ids)
    n_docs = len(acc)
    theta = np.float32(0.0)
    best = np.empty(0, dtype=np.int64)
    touched = 0
    taken = 0
    while taken < n_terms and rest[taken] > theta:
        lo, hi = indptr[ids[taken]], indptr[ids[taken] + 1]
        w = weights[taken]
        pool = np.empty(len(best) + (hi - lo), dtype=np.int64)
        m = 0
        b = 0
        for p in range(lo, hi):
            d = indices[p]
            if d < 0 or d >= n_docs:
                raise ValueError("a BM25 posting list names a chunk beyond the index: the index is damaged; rebuild it")
            a = acc[d]
            if a == 0:
                touched += 1
            a += w * data[p]
            acc[d] = a
            while b < len(best) and best[b] < d:
                pool[m] = best[b]
                m += 1
                b += 1
            if b < len(best) and best[b] == d:
                b += 1
                pool[m] = d
                m += 1
            elif a >= theta:
                pool[m] = d
                m += 1
        while b < len(best):
            pool[m] = best[b]
            m += 1
            b += 1
        taken += 1
        if m >= k:
            vals = np.empty(m, dtype=np.float32)
            for i in range(m):
                vals[i] = acc[pool[i]]
            kth = np.partition(vals, m - k)[m - k]
            if kth > theta:
                theta = kth
            keep = 0
            for i in range(m):
                if acc[pool[i]] >= theta:
                    pool[keep] = pool[i]
                    keep += 1
            m = keep
        best = pool[:m].copy()

    if len(best) >= k and taken < n_terms:
        # A higher floor for fewer candidates: the best chunks' exact scores (k of them are real).
        # Added up in the order the candidates' scores will be, so that the floats agree.
        exact = np.empty(len(best), dtype=np.float32)
        for i in range(len(best)):
            exact[i] = acc[best[i]]
        _add_scores(indptr, indices, data, ids[taken:], weights[taken:], best, exact)
        kth = np.partition(exact, len(exact) - k)[len(exact) - k]
        if kth > theta:
            theta = kth
    # Candidates (partial score > 0 and >= floor), in position order, by a branch-free pass;
    # then acc is zeroed for the next query.
    floor = theta - rest[taken]
    if floor <= 0:
        floor = np.nextafter(np.float32(0), np.float32(1))
    cand = np.empty(touched + 1, dtype=np.int64)
    partial = np.empty(touched + 1, dtype=np.float32)
    n_cand = 0
    for i in range(len(acc)):
        a = acc[i]
        cand[n_cand] = i
        partial[n_cand] = a
        n_cand += a >= floor
    acc[:] = 0

    # Finish each candidate with the other tokens; the k best so far raise theta.
    heap_s = np.empty(k, dtype=np.float32)
    heap_p = np.empty(k, dtype=np.int64)
    size = 0
    cursor = np.empty(n_terms, dtype=np.int64)
    for t in range(taken, n_terms):
        cursor[t] = indptr[ids[t]]
    for i in range(n_cand):
        s = partial[i]
        c = cand[i]
        t = taken
        while t < n_terms and s + rest[t] >= theta:
            hi = indptr[ids[t] + 1]
            p = _gallop(indices, cursor[t], hi, c)
            cursor[t] = p
            if p < hi and indices[p] == c:
                s += weights[t] * data[p]
            t += 1
        if t < n_terms or s < theta or s <= 0:
            continue
        if size < k:
            heap_s[size] = s
            heap_p[size] = c
            _sift_up(heap_s, heap_p, size)
            size += 1
        elif s > heap_s[0]:
            heap_s[0] = s
            heap_p[0] = c
            _sift_down(heap_s, heap_p, 0, size)
        if size == k and heap_s[0] > theta:
            theta = heap_s[0]
    # Best first; equal scores by position.
    order = np.argsort(heap_p[:size], kind="mergesort")
    top_p = heap_p[:size][order]
    top_s = heap_s[:size][order]
    order = np.argsort(-top_s, kind="mergesort")
    return top_p[order], top_s[order]


@njit(cache=True, nogil=True)
def _add_scores(indptr, indices, data, ids, weights, positions, out):
    """Add to ``out`` the query tokens' scores of ``positions`` (sorted, unique), token by token."""
    for t in range(len(ids)):
        p, hi = indptr[ids[t]], indptr[ids[t] + 1]
        w = weights[t]
        for i in range(len(positions)):
            p = _gallop(indices, p, hi, positions[i])
            if p < hi and indices[p] == positions[i]:
                out[i] += w * data[p]


@njit(cache=True, nogil=True)
def score_sorted(indptr, indices, data, ids, weights, positions):
    """Exact BM25 scores of ``positions`` (sorted, unique) for the query ``ids`` with ``weights``."""
    out = np.zeros(len(positions), dtype=np.float32)
    _add_scores(indptr, indices, data, ids, weights, positions, out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for the index dtypes bm25s writes."""
    indptr = np.array([0, 2, 3], dtype=np.int64)
    indices = np.array([0, 1, 1], dtype=np.int32)
    data = np.array([1.0, 0.5, 2.0], dtype=np.float32)
    ids = np.array([1, 0], dtype=np.int64)
    weights = np.ones(2, dtype=np.float32)
    rest = np.array([3.0, 1.0, 0.0], dtype=np.float32)
    for arrays in ((indptr, indices, data), _read_only(indptr, indices, data)):
        maxscore(*arrays, ids, weights, rest, 1, np.zeros(2, dtype=np.float32))
        score_sorted(*arrays, ids, weights, np.array([0, 1], dtype=np.int64))


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Copies flagged read-only, as the arrays of a memory-mapped index are (numba compiles them apart)."""
    out = []
    for a in arrays:
        a = a.copy()
        a.flags.writeable = False
        out.append(a)
    return tuple(out)
