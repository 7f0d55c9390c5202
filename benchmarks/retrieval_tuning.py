"""Chunk size and fusion on the eval sets: fit on tune, judge on check (answerable questions).

Prints hit@1/hit@5/mrr@10 on both sides per (corpus, chunk size, fusion) and writes JSON.

    python benchmarks/retrieval_tuning.py --sizes 200 300
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from rag.config import Config
from rag.evaluation.metrics import hit_at, mrr_at, relevance
from rag.pipeline import RAG


def load_questions(path: str) -> list[dict]:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return [r for r in rows if r["answers"]]


def score(rag: RAG, questions: list[dict]) -> dict[str, float]:
    results = rag.retrieve_batch([q["question"] for q in questions], top_k=10)
    h1 = h5 = mrr = 0.0
    for q, passages in zip(questions, results):
        gold = {rag.resolve_doc_id(d) for d in q["doc_ids"]}
        rel = relevance([(p.doc_id, p.text) for p in passages], gold, q["answers"])
        h1 += hit_at(rel, 1)
        h5 += hit_at(rel, 5)
        mrr += mrr_at(rel, 10)
    n = len(questions)
    return {"hit@1": round(h1 / n, 4), "hit@5": round(h5 / n, 4), "mrr@10": round(mrr / n, 4)}


CORPORA = {"default": "eval/sets/default", "cmrc": "eval/sets/cmrc"}


class CachedQueries:
    """The embedder with query vectors kept: every fusion variant asks the same questions."""

    def __init__(self, embedder) -> None:
        self.embedder, self.dimension, self._memo = embedder, embedder.dimension, {}

    def embed_queries(self, texts):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, self.embedder.embed_queries(missing)))
        return np.stack([self._memo[t] for t in texts])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[200])
    ap.add_argument("--workdir", default="index/tuning")
    ap.add_argument("--out", default="benchmarks/results/retrieval_tuning_v2.json")
    args = ap.parse_args()
    fusions = [("dense", 1, 1, 60, 0), ("lexical", 1, 1, 60, 0), ("rrf", 1, 1, 60, 0), ("rrf", 0.7, 1, 30, 0)]
    fusions += [("weighted", d, 1, 60, 0) for d in [0.5, 1.0]]
    fusions += [("hybrid", d, l, 60, c) for d, l, c in itertools.product([0, 0.25, 0.5, 1.0], [0, 0.25, 0.5, 1.0], [0.5, 1.0])]
    rows = []
    for corpus, folder in CORPORA.items():
        sides = {side: load_questions(f"{folder}/{side}.jsonl") for side in ("tune", "check")}
        for size in args.sizes:
            config = Config().with_overrides(chunking={"max_chars": size})
            t = time.perf_counter()
            rag = RAG.build([f"{folder}/corpus.jsonl"], index_dir=f"{args.workdir}/{corpus}-c{size}", config=config)
            build_s = time.perf_counter() - t
            embedder = CachedQueries(rag.embedder)
            for fusion, dw, lw, k, cw in fusions:
                cfg = config.with_overrides(retrieval={"fusion": fusion, "dense_weight": dw, "lexical_weight": lw, "rrf_k": k, "coverage_weight": cw})
                r = RAG(rag.indexes, cfg, embedder=embedder)
                row = {"corpus": corpus, "chunk": size, "fusion": fusion, "dense_w": dw, "lexical_w": lw, "rrf_k": k, "coverage_w": cw}
                for side, questions in sides.items():
                    row.update({f"{side}.{key}": v for key, v in score(r, questions).items()})
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
            print(f"# {corpus} chunk {size}: build {build_s:.1f}s, {len(rag.indexes[0].chunks)} chunks", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
