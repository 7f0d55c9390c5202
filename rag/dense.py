"""FAISS vector indexes: exact inner product for small corpora, ANN for large ones.

Index types (``index.faiss_type``):

* ``flat``: exact inner product; the right choice up to ``AUTO_FLAT_MAX``
  vectors, where a query still takes a few milliseconds.
* ``ivf``: inverted lists over 6-bit scalar-quantised codes, about 1/5 of the
  flat index's memory (8-bit codes alone are exactly 1/4, and the ids come on
  top). The codes rank coarsely (recall@10 about 0.92 on corpus-like vectors),
  so the retriever re-scores every candidate with the exact stored vectors,
  which brings recall@10 back to 1.0 (``benchmarks/retrieval_scale.py``).
  ``nlist`` and ``nprobe`` grow with the corpus.
* ``ivfpq``: inverted lists over product-quantised codes (1/16 of flat); lower
  recall on its own, meant for corpora too large for ``ivf``.
* ``hnsw``: a graph over the full vectors; fastest queries, more memory than flat.
* ``auto``: ``flat`` up to ``AUTO_FLAT_MAX`` vectors, ``ivf`` above.

An IVF index can be built in shards that share one trained coarse quantizer
(:func:`new_index` then ``add`` per shard) and merged with :func:`merge`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rag.errors import ConfigError, IndexLoadError

logger = logging.getLogger(__name__)

FAISS_TYPES = ("flat", "hnsw", "ivf", "ivfpq", "auto")
AUTO_FLAT_MAX = 50_000  # exact search stays under ~10 ms per query below this many vectors
TRAIN_PER_LIST = 40  # k-means sample per inverted list (FAISS warns below 39)
HNSW_M = 32
IVF_CODE_BITS = 6  # scalar-quantiser bits per dimension of the ``ivf`` type


def choose_type(kind: str, n: int) -> str:
    """The concrete index type for ``kind`` ("auto" picks by the vector count ``n``)."""
    if kind not in FAISS_TYPES:
        raise ConfigError(f"unknown index.faiss_type {kind!r}; use one of {', '.join(FAISS_TYPES)}")
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "ivf"


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 2·sqrt(n), a power of two, at most 4096,
    and few enough that each list gets ``TRAIN_PER_LIST`` training vectors."""
    if n < 2 * TRAIN_PER_LIST:
        return 1
    lists = 2 ** round(math.log2(2 * math.sqrt(n)))
    return int(max(1, min(4096, lists, n // TRAIN_PER_LIST)))


#: Vectors an IVF query should scan: the lists searched are about this many vectors' worth.
IVF_SCAN = 8192


def ivf_probes(nlist: int, n: int) -> int:
    """Lists searched per query for ``n`` vectors in ``nlist`` lists: enough to scan about
    :data:`IVF_SCAN` vectors, at least 16 (or all lists when fewer).

    On corpus-like vectors (benchmarks/retrieval_scale.py, 1M, nlist 2048) 4 probes
    already find 97% of the exact top 10. Hybrid ``RAG.retrieve`` at 1M, one core, against
    the exact hybrid ranking (88 dev questions; results/retrieval_hybrid_nprobe.json):
    64 probes (the rule before: 1/32 of the lists, at least 32) p50 13.3 ms, recall@10
    0.998; 32: 10.7 ms, 0.993; 16: 8.7 ms, 0.982 (IVF-SQ6 search itself 6.2, 3.1 and
    1.6 ms). This rule gives 17 there, 42 at 100k and all lists for a small index (uniform
    random vectors, the worst case, need many). Applied when an index is loaded too
    (:func:`load_faiss`), so indexes built under the old rule follow it.
    """
    return min(nlist, max(16, math.ceil(IVF_SCAN * nlist / max(n, 1))))


def new_index(kind: str, dim: int, n: int, train: np.ndarray | None = None, nlist: int | None = None):
    """An empty index of concrete type ``kind`` for about ``n`` vectors, trained on ``train`` if IVF.

    Shards that must merge later are all made from copies of one such index
    (``faiss.clone_index``), so they share the trained coarse quantizer.
    """
    import faiss

    IVF_CODE = getattr(faiss.ScalarQuantizer, f"QT_{IVF_CODE_BITS}bit")
    kind = choose_type(kind, n)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
        return index
    nlist = nlist or ivf_lists(n)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, IVF_CODE, faiss.METRIC_INNER_PRODUCT)
    else:  # ivfpq: dim/4 sub-quantizers of 8 bits (96 bytes a vector for dimension 384, 1/16 of flat)
        m = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    if train is None or len(train) == 0:
        raise ConfigError(f"a {kind} index needs training vectors")
    sample = train
    if len(train) > TRAIN_PER_LIST * nlist:
        sample = train[np.sort(np.random.default_rng(0).choice(len(train), TRAIN_PER_LIST * nlist, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = ivf_probes(nlist, n)
    return index


def build_faiss(vectors: np.ndarray, kind: str = "flat", nlist: int | None = None):
    """Build a FAISS inner-product index over unit vectors (``kind`` as in the module docstring)."""
    n, dim = vectors.shape
    index = new_index(kind, dim, n, train=vectors, nlist=nlist)
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def merge(shards: Sequence[object]):
    """Concatenate shards (same type; IVF shards sharing one coarse quantizer) in order.

    Row ``i`` of shard ``s`` becomes row ``sum(len(shards[:s])) + i``, exactly as
    if the shards' vectors had been added to one index in that order.
    """
    import faiss

    if not shards:
        raise ConfigError("no index shards to merge")
    merged = faiss.clone_index(shards[0])
    centroids = _centroids(merged)
    for shard in shards[1:]:
        if isinstance(merged, faiss.IndexHNSW):
            raise ConfigError("HNSW indexes cannot be merged; build them in one process")
        # FAISS checks types and sizes but not that the coarse quantizers agree.
        if centroids is not None and not np.array_equal(centroids, _centroids(shard)):
            raise ConfigError("IVF shards were trained separately; make every shard from one trained index (new_index)")
        # IVF shards number their rows from 0; shift them to their place in the merged index.
        merged.merge_from(shard, merged.ntotal if centroids is not None else 0)
    return merged


def _centroids(index) -> np.ndarray | None:
    import faiss

    try:
        quantizer = faiss.extract_index_ivf(index).quantizer
    except RuntimeError:
        return None
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def describe(index) -> dict:
    """Type and search parameters of ``index``, for the manifest."""
    import faiss

    info = {"class": type(index).__name__, "ntotal": int(index.ntotal)}
    try:
        ivf = faiss.extract_index_ivf(index)
        info.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe), code_bytes=int(ivf.code_size))
    except RuntimeError:
        pass
    if hasattr(index, "hnsw"):
        info.update(M=HNSW_M, efSearch=int(index.hnsw.efSearch))
    return info


def save_faiss(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_faiss(path: Path):
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise IndexLoadError(f"the FAISS file {path} is corrupt or truncated ({str(e).splitlines()[0]}); rebuild the index with `rag index build`") from e
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # flat or HNSW: nothing to probe
        return index
    ivf.nprobe = ivf_probes(ivf.nlist, ivf.ntotal)
    return index


def is_exact(index) -> bool:
    """Whether ``index`` scores every vector exactly (flat), so its top k needs no re-scoring."""
    import faiss

    return isinstance(index, faiss.IndexFlat)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores, positions) arrays of shape (len(queries), k'); k' <= k."""
    k = min(k, index.ntotal)
    if k == 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
