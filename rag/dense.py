"""FAISS vector indexes: exact inner product by default, ANN for large corpora."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rag.errors import ConfigError, IndexLoadError

logger = logging.getLogger(__name__)

FAISS_TYPES = ("flat", "hnsw", "ivf", "auto")
AUTO_FLAT_MAX = 50_000  # exact search stays fast (< 10 ms) below this many vectors


def choose_type(kind: str, n: int) -> str:
    if kind not in FAISS_TYPES:
        raise ConfigError(f"unknown index.faiss_type {kind!r}; use one of {', '.join(FAISS_TYPES)}")
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "ivf"


def build_faiss(vectors: np.ndarray, kind: str = "flat"):
    """Build a FAISS inner-product index over unit vectors."""
    import faiss

    n, dim = vectors.shape
    kind = choose_type(kind, n)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:  # ivf with scalar-quantised codes: 1/4 of the flat index memory
        nlist = max(1, min(4096, int(np.sqrt(max(n, 1)))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        train = vectors if n <= 100 * nlist else vectors[np.random.default_rng(0).choice(n, 100 * nlist, replace=False)]
        index.train(train)
        index.nprobe = min(nlist, max(16, nlist // 16))
    if n:
        index.add(vectors)
    return index


def save_faiss(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_faiss(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise IndexLoadError(f"the FAISS file {path} is corrupt or truncated ({str(e).splitlines()[0]}); rebuild the index with `rag index build`") from e


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores, positions) arrays of shape (len(queries), k'); k' <= k."""
    k = min(k, index.ntotal)
    if k == 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
