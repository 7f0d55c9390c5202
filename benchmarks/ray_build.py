"""Index build on a two-node Ray cluster against the single-process build, at 605 and 100k chunks.

The cluster is real, on this machine: ``ray start --head`` plus a second
``ray start --address`` node, one CPU each (:class:`rag.engine_ray.LocalCluster`),
so Ray schedules blocks across two raylets as across two machines; which node
ran how many rows of each stage comes from the index manifest (``placement``).

1. ``articles``: the default corpus (605 chunks) with the real embedder
   (``embedding.engine = auto``), built by one process and on the two nodes;
   both indexes must give the same top 5 for every dev question.
2. ``synthetic``: ``--chunks`` (default 100k) chunks of sentences shuffled from
   the corpus, built serially (the previous single-process path), with the local
   tokenising pool, and on the two nodes. Embedding 100k chunks with the real
   model on 2 cores would take hours, so these builds embed with a stand-in
   (hashed random vectors, as fast as a lookup); their ``embed`` column is the
   stand-in's. The real model is timed on a sample (``--embed-sample`` synthetic
   chunks, model loaded beforehand), back to back with all cores (the single
   process) and with one thread (a one-CPU node); the projected times add the
   chunks at those rates.

Projection to N nodes: the stages that ran in Ray blocks (chunk, embed,
tokenise, FAISS shards) scale by 2/N from the two-node time; the driver's stages
(reading and folding, FAISS training and merge, BM25 indexing, save) stay. It
ignores network and object-store costs that a one-machine cluster does not pay.
A 1M-chunk build is not run: jieba alone is ~30 min on these 2 cores, and Ray
Data ``from_items`` rows of 1M chunks on a 24 GB machine beside the driver's
copy is near the limit; its projection is printed instead.

    python benchmarks/ray_build.py [--chunks 100000]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, table, write_results  # noqa: E402

from rag.build import build_index  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.corpus import load_documents  # noqa: E402
from rag.engine_ray import LocalCluster, RayEngine  # noqa: E402

logger = logging.getLogger("ray_build")
STAGES = ("read_s", "chunk_s", "embed_s", "faiss_s", "tokenize_s", "bm25_s", "save_s")
RAY_STAGES = ("chunk_s", "embed_s", "faiss_s", "tokenize_s")  # run in Ray blocks; the rest on the driver


class StandInEmbedder:
    """Hashed random unit vectors: the pipeline's data volume without the model's cost."""

    dimension = 384
    engine = "stand-in"

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dimension)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def synthetic_corpus(folder: Path, chunks: int, files: int = 8, seed: int = 0) -> list[Path]:
    """JSONL files of documents made of corpus sentences in random order, about ``chunks`` chunks in all."""
    sentences = [s + "。" for d in load_documents(["data/articles.txt"]) for s in d.text.split("。") if len(s) > 5]
    rng = random.Random(seed)
    docs_needed = max(files, chunks // 20)  # a 4000-character document makes about 20 chunks of 300 characters
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part{i}.jsonl" for i in range(files)]
    handles = [p.open("w", encoding="utf-8") for p in paths]
    for n in range(docs_needed):
        text, size = [], 0
        while size < 4000:
            text.append(rng.choice(sentences))
            size += len(text[-1])
        handles[n % files].write(json.dumps({"id": f"s{n}", "text": "".join(text)}, ensure_ascii=False) + "\n")
    for h in handles:
        h.close()
    return paths


def stage_row(name: str, manifest: dict, read_s: float, wall_s: float) -> dict:
    t = manifest["timings"]
    row = {"build": name, "chunks": manifest["counts"]["chunks"], "read_s": read_s}
    row.update({k: t.get(k, 0.0) for k in STAGES if k not in ("read_s", "save_s")})
    row["save_s"] = wall_s - t["total_s"]  # build_index times everything up to the save
    row["total_s"] = read_s + wall_s
    row["chunks_per_s"] = row["chunks"] / row["total_s"]
    return row


def local_build(name: str, paths: list[Path], out: Path, config: Config, factory, workers: int) -> tuple[dict, object]:
    with Timer() as read:
        docs = load_documents(paths)
    with Timer() as wall:
        index = build_index(paths, out / name, config, factory, documents=docs, force=True, tokenize_workers=workers)
    return stage_row(name, index.manifest, read.s, wall.s), index


def ray_build(name: str, paths: list[Path], out: Path, config: Config, address: str, embedder=None) -> tuple[dict, object]:
    engine = RayEngine(config, address=address, embedder=embedder)
    try:
        with Timer() as read:
            docs = engine.load_documents(paths)
        with Timer() as wall:
            index = build_index(paths, out / name, config, lambda: engine, documents=docs, engine=engine, force=True)
    finally:
        engine.shutdown()
    row = stage_row(name, index.manifest, read.s, wall.s)
    row["nodes_per_stage"] = {stage: len(nodes) for stage, nodes in index.manifest["placement"].items()}
    return row, index


def top5_agreement(a, b) -> float:
    from rag.pipeline import RAG

    questions = [json.loads(line)["question"] for line in open("eval/dev_questions.jsonl", encoding="utf-8")]
    ra = RAG([a], Config())
    rb = RAG([b], Config(), embedder=ra.embedder)
    same = [[p.chunk_id for p in x] == [p.chunk_id for p in y]
            for x, y in zip(ra.retrieve_batch(questions, 5), rb.retrieve_batch(questions, 5))]
    return sum(same) / len(same)


def project(ray_row: dict, chunks: int, embed_rate_per_node: float, nodes: int) -> float:
    """Build seconds for ``chunks`` on ``nodes`` nodes with the real embedder, from a two-node run."""
    scale = chunks / ray_row["chunks"]
    parallel = sum(ray_row[k] for k in RAY_STAGES if k != "embed_s") * scale * 2 / nodes
    driver = sum(ray_row[k] for k in STAGES if k not in RAY_STAGES) * scale
    return driver + parallel + chunks / (embed_rate_per_node * nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--embed-sample", type=int, default=600, help="synthetic chunks the real model embeds on one thread")
    parser.add_argument("--name", default="ray_build")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = Config()
    work = Path(tempfile.mkdtemp(prefix="ray-bench-", dir="/tmp"))
    rows = []
    with LocalCluster(work / "ray", nodes=2, cpus_per_node=1, object_store_mb=2000) as cluster:
        # 1. the default corpus, real embedder
        from rag.embedding import Embedder

        holder: dict = {}
        local_row, local_index = local_build("articles: single process", [Path("data/articles.txt")], work, config,
                                             lambda: holder.setdefault("e", Embedder(config.embedding)), workers=1)
        ray_row, ray_index = ray_build("articles: ray, 2 nodes", [Path("data/articles.txt")], work, config, cluster.address)
        agreement = top5_agreement(local_index, ray_index)
        rows += [local_row, ray_row]
        print(f"dev top-5 identical (ray vs single process): {agreement:.3f}", flush=True)

        # 2. synthetic corpus, stand-in embedder; the real model timed on a sample of it
        paths = synthetic_corpus(work / "synthetic", args.chunks)
        from rag.chunking import chunk_documents

        sample = [c.text for c in chunk_documents(load_documents(paths[:1]), 300, 1, 80)][: args.embed_sample]
        rates = {}
        for threads in (0, 1):  # 0: all cores, as the single-process build
            embedder = Embedder(dataclasses.replace(config.embedding, threads=threads))
            embedder.embed_passages(sample[:8])  # warm up
            with Timer() as t:
                embedder.embed_passages(sample)
            rates[threads] = len(sample) / t.s
            del embedder
        embed_local, embed_node = rates[0], rates[1]
        print(f"real-model embedding of {len(sample)} synthetic chunks: {embed_local:.1f} chunks/s with all cores, "
              f"{embed_node:.1f} on one thread (a 1-CPU node)", flush=True)
        stand_in = config.with_overrides(embedding={"model": "stand-in-hash"})
        for name, workers in (("synthetic: single process, serial tokens", 1), ("synthetic: single process, token pool", 0)):
            row, _ = local_build(name, paths, work, stand_in, StandInEmbedder, workers=workers or None)
            rows.append(row)
            print(table([row]), flush=True)
        row, big = ray_build("synthetic: ray, 2 nodes", paths, work, stand_in, cluster.address, embedder=StandInEmbedder)
        rows.append(row)
        del big
    n = rows[-1]["chunks"]
    serial = rows[-3]
    real_embed_serial = serial["total_s"] - serial["embed_s"] + n / embed_local
    projections = {f"{k} nodes": round(project(rows[-1], n, embed_node, k), 1) for k in (1, 2, 4, 8, 16)}
    projections_1m = {f"{k} nodes": round(project(rows[-1], 1_000_000, embed_node, k), 1) for k in (2, 8, 16, 64)}
    print(table(rows, ["build", "chunks", *STAGES, "total_s", "chunks_per_s", "nodes_per_stage"]))
    print(f"\nThe synthetic builds' embed_s is a stand-in embedder (hashed vectors), NOT the model. With the real model "
          f"({embed_local:.1f} chunks/s single process, {embed_node:.1f} per 1-CPU node, measured on samples above), projected:")
    print(f"  {n} chunks, single process (serial tokens): {real_embed_serial:.0f} s projected")
    print(f"  {n} chunks on N one-CPU nodes, projected seconds: {projections}")
    print(f"  1M chunks (not run), projected seconds: {projections_1m}")
    path = write_results(args.name, rows, dev_top5_identical=agreement, embed_chunks_per_s_single_process=round(embed_local, 2),
                         embed_chunks_per_s_per_node=round(embed_node, 2), embed_sample_chunks=len(sample), projected_s_real_embedder=projections,
                         projected_s_real_embedder_1m=projections_1m, projected_s_single_process_real_embedder=round(real_embed_serial, 1),
                         note="synthetic rows embed with a stand-in (hashed vectors); projections add the real model's measured rate; "
                              "N-node projection scales the Ray-block stages by 2/N and keeps the driver stages; one-machine cluster, "
                              f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
