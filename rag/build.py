"""Build an index from document files: corpus -> chunks -> embeddings -> index.

Re-running a build on an unchanged corpus with the same settings returns the
stored index without embedding anything; when the corpus changed, vectors of
chunks whose text is unchanged are reused.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rag import dense
from rag.chunking import chunk_documents
from rag.config import Config, available_cores
from rag.corpus import corpus_hash, load_documents
from rag.errors import IndexLoadError
from rag.index import FORMAT_VERSION, Index, build_lock, clean_leftovers
from rag.lexical import LexicalIndex, tokenize
from rag.records import Document

logger = logging.getLogger(__name__)

#: Below this many chunks BM25 tokens are made in this process: jieba does about
#: 500 chunks/s per core, so a pool would save less than it costs to start.
PARALLEL_TOKENIZE_MIN = 2000


def tokenize_texts(texts: list[str], workers: int | None = None) -> list[list[str]]:
    """BM25 tokens of each text (``rag.lexical.tokenize``), in a process pool for large inputs.

    The result equals ``[tokenize(t) for t in texts]``; ``workers`` defaults to
    the cores this process may use.
    """
    workers = workers or available_cores()
    if workers <= 1 or len(texts) < PARALLEL_TOKENIZE_MIN:
        return [tokenize(t) for t in texts]
    tokenize("")  # load jieba's dictionary here, so forked workers inherit it instead of each loading it
    # fork on Linux: workers start in milliseconds with the dictionary loaded; they only run
    # jieba, never the parent's model threads. Elsewhere fork is unsafe (macOS) or missing.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    chunksize = max(64, len(texts) // (workers * 8))  # few large messages, yet an even finish
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(tokenize, texts, chunksize=chunksize))


def _fingerprint(config: Config, docs_hash: str, dimension: int | None = None) -> dict:
    return {
        "corpus_hash": docs_hash,
        "embedding_model": config.embedding.model,
        "passage_prefix": config.embedding.passage_prefix,
        "chunking": dataclasses.asdict(config.chunking),
        "faiss_type_requested": config.index.faiss_type,
    }


def _previous(index_dir: Path, model: str) -> Index | None:
    if not (index_dir / "manifest.json").exists():
        return None
    try:
        return Index.load(index_dir, embedding_model=model)
    except IndexLoadError as e:
        logger.warning("ignoring the previous index: %s", e)
        return None


def build_index(
    paths: Iterable[str | Path],
    index_dir: str | Path,
    config: Config,
    embedder_factory: Callable[[], object],
    force: bool = False,
    documents: list[Document] | None = None,
    engine=None,
    tokenize_workers: int | None = None,
) -> Index:
    """Build (or reuse) the index for ``paths`` in ``index_dir`` and return it loaded.

    ``embedder_factory`` is only called when something must be embedded, so an
    unchanged corpus never loads the embedding model here. ``engine`` (e.g.
    ``rag.engine_ray.RayEngine``) replaces the local chunking and FAISS build
    with its own ``chunk_documents``, ``build_faiss`` and (when it has one)
    ``tokenize``. ``tokenize_workers``: processes that tokenise for BM25 in a
    local build (default: one per core; small corpora are tokenised in-process).
    """
    index_dir = Path(index_dir)
    started = time.perf_counter()
    paths = [str(p) for p in paths]
    docs = documents if documents is not None else load_documents(paths, config.corpus.csv_text_column, config.corpus.max_file_bytes)
    fingerprint = _fingerprint(config, corpus_hash(docs))
    with build_lock(index_dir, wait_s=0.0):
        clean_leftovers(index_dir)
        old = _previous(index_dir, config.embedding.model)
        if old is not None and not force and old.manifest.get("fingerprint") == fingerprint:
            logger.info("index at %s is up to date (%d chunks); nothing to embed", index_dir, len(old.chunks))
            return old
        timings: dict[str, float] = {}
        stage = time.perf_counter()
        if engine is not None:
            chunks = engine.chunk_documents(docs, config.chunking)
        else:
            chunks = chunk_documents(docs, config.chunking.max_chars, config.chunking.overlap_sentences, config.chunking.context_chars)
        timings["chunk_s"] = time.perf_counter() - stage
        reuse = {}
        if old is not None and not force:
            reuse = {c.text: old.vectors[i] for i, c in enumerate(old.chunks)}
        todo = [i for i, c in enumerate(chunks) if c.text not in reuse]
        embedder = embedder_factory() if todo or not reuse else None
        t_embed = time.perf_counter()
        new = None
        if todo:
            logger.info("embedding %d chunks (%d reused)", len(todo), len(chunks) - len(todo))
            new = embedder.embed_passages([chunks[i].text for i in todo])
        t_embed = time.perf_counter() - t_embed
        # The dimension comes from the vectors: a distributed engine knows it only after embedding.
        dim = new.shape[1] if new is not None else embedder.dimension if embedder is not None else old.dimension
        vectors = np.zeros((len(chunks), dim), dtype=np.float32)
        for i, c in enumerate(chunks):
            if c.text in reuse:
                vectors[i] = reuse[c.text]
        if todo:
            vectors[todo] = new
        faiss_type = dense.choose_type(config.index.faiss_type, len(chunks))
        stage = time.perf_counter()
        faiss_index = (engine or dense).build_faiss(vectors, faiss_type)
        timings["faiss_s"] = time.perf_counter() - stage
        stage = time.perf_counter()
        texts = [c.text for c in chunks]
        tokens = engine.tokenize(texts) if hasattr(engine, "tokenize") else tokenize_texts(texts, tokenize_workers)
        timings["tokenize_s"] = time.perf_counter() - stage
        stage = time.perf_counter()
        lexical = LexicalIndex.from_tokens(tokens)
        timings["bm25_s"] = time.perf_counter() - stage
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "embedding": {
                "model": config.embedding.model,
                "dimension": dim,
                "query_prefix": config.embedding.query_prefix,
                "passage_prefix": config.embedding.passage_prefix,
                "engine": getattr(embedder, "engine", None) if embedder is not None
                else old.manifest["embedding"].get("engine", old.manifest["embedding"].get("backend")),
            },
            "chunking": dataclasses.asdict(config.chunking),
            "faiss_type": faiss_type,
            "faiss": dense.describe(faiss_index),
            "build_engine": getattr(engine, "name", "local"),
            "lexical": {"engine": "bm25s", "tokenizer": "jieba.cut_for_search"},
            "corpus_hash": fingerprint["corpus_hash"],
            "fingerprint": fingerprint,
            "sources": paths,
            "counts": {"documents": len(docs), "chunks": len(chunks), "aliases": sum(len(d.aliases) for d in docs)},
            "timings": {**{k: round(v, 3) for k, v in timings.items()}, "embed_s": round(t_embed, 3),
                        "total_s": round(time.perf_counter() - started, 3), "embedded": len(todo)},
            "config": config.to_dict(),
        }
        if getattr(engine, "placement", None):
            # Which cluster node ran how many rows of each distributed stage.
            manifest["placement"] = engine.placement
        index = Index(manifest, docs, chunks, vectors, faiss_index, lexical)
        index.save(index_dir)
    logger.info("built index %s: %d documents, %d chunks in %.1fs", index_dir, len(docs), len(chunks), time.perf_counter() - started)
    return index
