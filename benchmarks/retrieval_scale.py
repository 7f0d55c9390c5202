"""Retrieval latency, recall and memory against corpus size (synthetic data).

Dense: exact ``IndexFlatIP`` (the baseline) against HNSW and IVF-SQ6/IVF-PQ at
10k, 100k and 1M vectors of dimension 384, on two kinds of data:

* ``random``: unit vectors drawn uniformly, the worst case for any ANN index
  (no structure to exploit, near-ties everywhere);
* ``clustered``: the default corpus's passage embeddings plus Gaussian noise,
  closer to what a real index holds.

Per configuration: build time, index bytes (serialised FAISS index, the memory
it takes loaded), p50/p95 per single query (the retriever searches one query at
a time), recall@10 against exact search, and recall@10 after re-ranking the top
30 with exact inner products, which is what ``Retriever`` does anyway (hybrid
fusion rescores every candidate with the stored vectors).

BM25: ``rag.lexical.LexicalIndex`` query latency over synthetic documents made
from the corpus's chunk tokens with perturbations (tokens dropped, replaced and
borrowed from another chunk). Building skips jieba for speed: its throughput is
measured on the real chunks and reported separately.

    python benchmarks/retrieval_scale.py --sizes 10000 100000 1000000
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, load_dev_questions, peak_rss_mb, percentiles, rss_mb, table, write_results  # noqa: E402

from rag import dense  # noqa: E402

logger = logging.getLogger("retrieval_scale")
DIM = 384
K = 10
RERANK = 30


def random_unit(n: int, dim: int, seed: int, block: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, block):
        x = rng.standard_normal((min(block, n - s), dim), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered(n: int, base: np.ndarray, noise: float, seed: int, block: int = 100_000) -> np.ndarray:
    """Corpus embeddings plus isotropic noise of total norm ``noise`` (before renormalising)."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, block):
        m = min(block, n - s)
        x = base[rng.integers(0, len(base), m)] + rng.standard_normal((m, dim), dtype=np.float32) * (noise / np.sqrt(dim))
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def timed_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """Search one query at a time (as the retriever does); positions and per-query ms."""
    out = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        _, pos = index.search(queries[i : i + 1], k)
        times.append((time.perf_counter() - t) * 1000)
        out[i] = pos[0]
    return out, times


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth)]))


def rerank(found: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = np.empty((len(found), K), dtype=np.int64)
    for i, row in enumerate(found):
        row = row[row >= 0]
        scores = vectors[row] @ queries[i]
        out[i] = row[np.argsort(-scores, kind="stable")[:K]]
    return out


def set_search_param(index, kind: str, value: int) -> None:
    import faiss

    if kind.startswith("hnsw"):
        faiss.downcast_index(index).hnsw.efSearch = value
    else:
        faiss.extract_index_ivf(index).nprobe = value


def bench_dense(data: str, n: int, args, base: np.ndarray | None) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    seed = 1000 + n
    vectors = random_unit(n, DIM, seed) if data == "random" else clustered(n, base, args.noise, seed)
    queries = random_unit(args.queries, DIM, 7) if data == "random" else clustered(args.queries, base, args.noise, 7)
    rows: list[dict] = []
    flat_bytes = n * DIM * 4

    def row(config: str, param: str, build_s: float, nbytes: int, found: np.ndarray, times: list[float], truth: np.ndarray) -> dict:
        r = {"data": data, "n": n, "index": config, "param": param, "build_s": round(build_s, 2),
             "mem_mb": round(nbytes / 2**20, 1), "mem_vs_flat": round(nbytes / flat_bytes, 3),
             **percentiles(times), f"recall@{K}": round(recall(found, truth), 4)}
        if found.shape[1] >= RERANK:
            r[f"recall@{K}_rerank{RERANK}"] = round(recall(rerank(found, vectors, queries), truth), 4)
        rows.append(r)
        print(table([r]).splitlines()[-1], flush=True)
        return r

    with Timer() as t:
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vectors)
    truth, times = timed_search(flat, queries, RERANK)
    row("flat (exact, baseline)", "", t.s, flat_bytes, truth, times, truth)
    del flat
    gc.collect()

    configs = []
    if n <= args.hnsw_max:
        configs.append(("hnsw", "hnsw32", [16, 32, 64, 128, 256]))
    configs.append(("ivf", "ivf", None))
    configs += [("ivf", f"ivf nlist={nl}", None) for nl in args.nlist if nl != dense.ivf_lists(n) and n >= dense.TRAIN_PER_LIST * nl]
    if n <= args.extra_max:
        configs += [(kind, kind, None) for kind in args.extra]
    for kind, label, sweep in configs:
        with Timer() as t:
            if label == "hnsw32":
                index = dense.build_faiss(vectors, "hnsw")
            else:
                index = dense.build_faiss(vectors, kind, nlist=int(label.split("=")[1]) if "nlist=" in label else None)
        nbytes = index_bytes(index)
        if sweep is None:
            ivf = faiss.extract_index_ivf(index)
            label = f"{kind}: {type(index).__name__} nlist={ivf.nlist} {ivf.code_size} B/vector"
            sweep = sorted({p for p in (4, 8, 16, 32, 64, 128, 256, ivf.nprobe) if p <= ivf.nlist})
            default = ivf.nprobe
        else:
            default = faiss.downcast_index(index).hnsw.efSearch
        for value in sweep:
            set_search_param(index, kind, value)
            found, times = timed_search(index, queries, RERANK)
            mark = " (default)" if value == default else ""
            row(label, f"{'efSearch' if kind == 'hnsw' else 'nprobe'}={value}{mark}", t.s, nbytes, found, times, truth)
        del index
        gc.collect()
    del vectors
    gc.collect()
    return rows


def synthetic_token_docs(pool: list[list[str]], n: int, seed: int, sources: list[int] | None = None) -> list[list[str]]:
    """Corpus chunks' tokens with 20% dropped, 10% replaced and 8 borrowed from another chunk.

    ``sources``, if given, receives the position in ``pool`` each document was made from.
    """
    rng = np.random.default_rng(seed)
    vocab = sorted({t for doc in pool for t in doc})
    docs = []
    picks = rng.integers(0, len(pool), (n, 2))
    if sources is not None:
        sources.extend(int(a) for a in picks[:, 0])
    for a, b in picks:
        base = pool[a]
        u = rng.random(len(base))
        swap = rng.integers(0, len(vocab), len(base))
        doc = [t if x >= 0.1 else vocab[j] for t, x, j in zip(base, u, swap) if x < 0.1 or x >= 0.3]
        other = pool[b]
        if other:
            s = rng.integers(0, len(other))
            doc += other[s : s + 8]
        docs.append(doc or ["<empty>"])
    return docs


def bench_bm25(sizes: list[int], index_dir: str) -> list[dict]:
    import bm25s

    from rag.index import Index
    from rag.lexical import LexicalIndex, tokenize

    idx = Index.load(index_dir)
    texts = [c.text for c in idx.chunks]
    with Timer() as t:
        pool = [tokenize(x) for x in texts]
    jieba_cps = sum(map(len, texts)) / t.s
    questions = [q["question"] for q in load_dev_questions()]
    rows = []
    for n in sizes:
        docs = synthetic_token_docs(pool, n, seed=n)
        with Timer() as tb:
            bm25 = bm25s.BM25()
            bm25.index(docs, show_progress=False)
        del docs
        gc.collect()
        lexical = LexicalIndex(bm25)
        lexical.search(questions[0], RERANK)
        times = []
        for q in questions:
            start = time.perf_counter()
            lexical.search(q, RERANK)
            times.append((time.perf_counter() - start) * 1000)
        est_tok_s = n * (sum(map(len, texts)) / len(texts)) / jieba_cps
        r = {"n": n, "build_s (pre-tokenised)": round(tb.s, 1), "jieba_s (estimated)": round(est_tok_s, 1),
             **percentiles(times), "rss_mb": round(rss_mb())}
        rows.append(r)
        print(table([r]).splitlines()[-1], flush=True)
        del lexical, bm25
        gc.collect()
    return rows


# --- Hybrid: RAG.retrieve end to end over a saved synthetic index ------------------------------


class FixedQueries:
    """Stands in for the embedder: query vectors computed beforehand (embedding is timed apart)."""

    def __init__(self, questions: list[str], vectors: np.ndarray) -> None:
        self.vectors = {q: vectors[i] for i, q in enumerate(questions)}

    def embed_queries(self, queries):
        return np.stack([self.vectors[q] for q in queries])


class ExhaustiveLexical:
    """BM25 as before MaxScore: every chunk scored into a dense array, then the top taken."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def search(self, query: str, k: int):
        return self.inner.top(self.inner.scores(query), k)

    def score_positions(self, query: str, positions):
        return self.inner.scores(query)[np.asarray(positions, dtype=np.int64)]


def build_synthetic_index(n: int, pool: list[list[str]], base: np.ndarray, folder: Path, noise: float) -> dict:
    """Save an index of ``n`` synthetic chunks (ten to a document) whose vectors follow their source chunk."""
    from rag.index import FORMAT_VERSION, Index
    from rag.lexical import LexicalIndex
    from rag.records import Chunk, Document

    sources: list[int] = []
    tokens = synthetic_token_docs(pool, n, seed=n, sources=sources)
    rng = np.random.default_rng(n)
    # float() keeps the vectors float32, as a real build's are (a NumPy float64 scalar would promote them).
    vectors = base[np.asarray(sources)] + rng.standard_normal((n, base.shape[1]), dtype=np.float32) * float(noise / np.sqrt(base.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Timer() as tf:
        faiss_index = dense.build_faiss(vectors, dense.choose_type("auto", n))
    with Timer() as tl:
        lexical = LexicalIndex.from_tokens(tokens)
    chunks, documents = [], []
    for d in range(0, n, 10):
        texts = ["".join(t) for t in tokens[d : d + 10]]
        doc_id, text, start = f"syn-{d // 10:06d}", "".join(texts), 0
        documents.append(Document(id=doc_id, text=text, title=doc_id))
        for j, t in enumerate(texts):
            chunks.append(Chunk(id=f"{doc_id}-{j}", doc_id=doc_id, text=t, start=start, end=start + len(t), title=doc_id, context=text[:80] if j else ""))
            start += len(t)
    del tokens
    manifest = {"format_version": FORMAT_VERSION, "embedding": {"model": "synthetic", "dimension": int(base.shape[1])},
                "counts": {"documents": len(documents), "chunks": n, "aliases": 0}, "faiss": dense.describe(faiss_index)}
    with Timer() as ts:
        Index(manifest, documents, chunks, vectors, faiss_index, lexical).save(folder)
    lexical_bytes = sum(p.stat().st_size for p in (folder / "lexical").iterdir())
    term_max = (folder / "lexical" / "term_max.npy").stat().st_size
    return {"faiss_build_s": round(tf.s, 1), "bm25_build_s (pre-tokenised)": round(tl.s, 1), "save_s": round(ts.s, 1),
            "lexical_mb": round(lexical_bytes / 2**20, 1), "lexical_vs_bm25s": round(lexical_bytes / (lexical_bytes - term_max), 3)}


def probe(folder: str, qvec_file: str) -> dict:
    """Run in a fresh process: start-up, memory and latency of serving ``folder``, and recall."""
    import copy
    import dataclasses

    import faiss

    from rag.config import RetrievalConfig
    from rag.index import Index
    from rag.retrieval import Retriever

    faiss.omp_set_num_threads(1)
    questions = [q["question"] for q in load_dev_questions()]
    embedder = FixedQueries(questions, np.load(qvec_file))
    rss0, anon0, file0 = rss_mb(), rss_mb("RssAnon"), rss_mb("RssFile")
    with Timer() as t:
        index = Index.load(folder)
        retriever = Retriever([index], embedder, RetrievalConfig())
        retriever.retrieve(questions[0], top_k=K)
    rss_loaded = rss_mb()

    def run(r: Retriever) -> tuple[list[list[str]], list[float]]:
        found, times = [], []
        for q in questions:
            start = time.perf_counter()
            found.append([p.chunk.id for p in r.retrieve(q, top_k=K)])
            times.append((time.perf_counter() - start) * 1000)
        return found, times

    _, cold = run(retriever)
    found, warm = run(retriever)
    rss_served, anon, mapped = rss_mb(), rss_mb("RssAnon"), rss_mb("RssFile")
    once = Retriever([index], embedder, RetrievalConfig(dense_overfetch=1))
    found_once, t_once = run(once)
    in_numpy = copy.copy(index.lexical)
    in_numpy.compiled = False
    found_numpy, t_numpy = run(Retriever([dataclasses.replace(index, lexical=in_numpy)], embedder, RetrievalConfig()))
    before = Retriever([dataclasses.replace(index, lexical=ExhaustiveLexical(index.lexical))], embedder, RetrievalConfig())
    found_before, t_before = run(before)
    flat = faiss.IndexFlatIP(index.dimension)
    flat.add(np.ascontiguousarray(index.vectors, dtype=np.float32))
    exact = Retriever([dataclasses.replace(index, faiss_index=flat, lexical=ExhaustiveLexical(index.lexical))], embedder, RetrievalConfig())
    truth, t_exact = run(exact)

    def rec(f: list[list[str]]) -> float:
        return round(float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(f, truth)])), 4)

    return {"startup_s": round(t.s, 2), "rss_index_mb": round(rss_loaded - rss0), "rss_after_queries_mb": round(rss_served - rss0),
            "anon_after_queries_mb": round(anon - anon0), "mapped_files_after_queries_mb": round(mapped - file0),
            "now": {**percentiles(warm), "cold_p50_ms": percentiles(cold)["p50_ms"], f"recall@{K}": rec(found)},
            "once": {**percentiles(t_once), f"recall@{K}": rec(found_once)},
            "numpy": {**percentiles(t_numpy), f"recall@{K}": rec(found_numpy)},
            "before": {**percentiles(t_before), f"recall@{K}": rec(found_before)},
            "exact": {**percentiles(t_exact), f"recall@{K}": 1.0}}


def bench_hybrid(sizes: list[int], args) -> list[dict]:
    import json
    import shutil
    import subprocess

    from rag.embedding import Embedder
    from rag.index import Index
    from rag.lexical import tokenize

    idx = Index.load(args.index_dir)
    pool = [tokenize(c.text) for c in idx.chunks]
    base = np.asarray(idx.vectors, dtype=np.float32)
    questions = [q["question"] for q in load_dev_questions()]
    embedder = Embedder()
    embedder.embed_queries(questions[:2])
    times, qvecs = [], []
    for q in questions:
        start = time.perf_counter()
        qvecs.append(embedder.embed_queries([q])[0])
        times.append((time.perf_counter() - start) * 1000)
    del embedder
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    qvec_file = work / "queries.npy"
    np.save(qvec_file, np.stack(qvecs).astype(np.float32))
    embed = percentiles(times)
    print(f"query embedding (apart from retrieval): p50 {embed['p50_ms']} ms, p95 {embed['p95_ms']} ms", flush=True)
    rows = []
    for n in sizes:
        folder = work / f"hybrid-{n}"
        built = build_synthetic_index(n, pool, base, folder, args.noise)
        gc.collect()
        out = subprocess.run([sys.executable, __file__, "--probe", str(folder), "--qvecs", str(qvec_file)],
                             capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        for variant, label in (("now", "compiled MaxScore BM25 + IVF, dense candidates fetched 2x (default)"),
                               ("numpy", "MaxScore BM25 in NumPy calls + IVF 2x (before numba)"),
                               ("once", "compiled MaxScore BM25 + IVF, dense candidates fetched once"),
                               ("before", "dense-array BM25 + IVF 2x (first round's BM25)"), ("exact", "exhaustive BM25 + flat (exact)")):
            r = {"n": n, "retrieve": label, **got[variant]}
            if variant == "now":
                r.update(built, **{k: got[k] for k in ("startup_s", "rss_index_mb", "rss_after_queries_mb", "anon_after_queries_mb", "mapped_files_after_queries_mb")})
            rows.append(r)
            print(table([r]).splitlines()[-1], flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return rows, embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["random", "clustered"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.6, help="noise norm added to corpus embeddings (clustered data)")
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads (single queries use one anyway)")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest size to build HNSW at (slow to build)")
    ap.add_argument("--extra", nargs="*", default=[], help="more dense.build_faiss kinds, e.g. ivfpq")
    ap.add_argument("--nlist", type=int, nargs="*", default=[], help="IVF list counts to try besides dense.ivf_lists(n)")
    ap.add_argument("--extra-max", type=int, default=100_000, help="largest size to build the --extra kinds at")
    ap.add_argument("--bm25-sizes", type=int, nargs="*", default=None, help="default: --sizes")
    ap.add_argument("--index-dir", default="index/default", help="built index whose chunks and vectors seed the synthetic data")
    ap.add_argument("--name", default="retrieval_scale")
    ap.add_argument("--hybrid-sizes", type=int, nargs="*", default=[], help="RAG.retrieve end to end over saved synthetic indexes of these sizes")
    ap.add_argument("--work-dir", default="index/bench-hybrid", help="where the synthetic hybrid indexes are written")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic hybrid indexes")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--qvecs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.probe:
        import json

        print(json.dumps(probe(args.probe, args.qvecs)))
        return
    if args.hybrid_sizes:
        rows, embed = bench_hybrid(args.hybrid_sizes, args)
        path = write_results(args.name, rows, query_embedding=embed, settings=vars(args), peak_rss_mb=round(peak_rss_mb()))
        print("\n## Hybrid (RAG.retrieve, query embedding excluded)\n" + table(rows) + f"\n\nwrote {path}")
        return
    base = np.load(Path(args.index_dir) / "vectors.npy")
    rows: list[dict] = []
    print(table([{k: None for k in ("data", "n", "index", "param", "build_s", "mem_mb", "mem_vs_flat", "p50_ms", "p95_ms", "recall@10", "recall@10_rerank30")}]).rsplit("\n", 1)[0])
    for data in args.data:
        for n in args.sizes:
            rows += bench_dense(data, n, args, base)
            write_results(args.name, rows, bm25=[], settings=vars(args), auto_flat_max=dense.AUTO_FLAT_MAX)
    bm25_rows = bench_bm25(args.bm25_sizes if args.bm25_sizes is not None else args.sizes, args.index_dir) if args.bm25_sizes != [] else []
    path = write_results(args.name, rows, bm25=bm25_rows, settings=vars(args), auto_flat_max=dense.AUTO_FLAT_MAX, peak_rss_mb=round(peak_rss_mb()))
    print("\n## Dense\n" + table(rows) + "\n\n## BM25\n" + table(bm25_rows) + f"\n\npeak RSS {peak_rss_mb():.0f} MB; wrote {path}")


if __name__ == "__main__":
    main()
