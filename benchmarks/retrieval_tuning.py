"""Tune chunk size and fusion on the dev set (answerable questions).

Prints hit@1/hit@5/mrr@10 per (chunk size, fusion) and writes JSON.

    python benchmarks/retrieval_tuning.py --sizes 150 200 300 500 --out benchmarks/results/retrieval_tuning.json
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", default="eval/dev_questions.jsonl")
    ap.add_argument("--sizes", type=int, nargs="+", default=[200])
    ap.add_argument("--workdir", default="index/tuning")
    ap.add_argument("--out", default="benchmarks/results/retrieval_tuning.json")
    args = ap.parse_args()
    questions = load_questions(args.questions)
    fusions = [("dense", 1, 1, 60, 0), ("lexical", 1, 1, 60, 0), ("rrf", 1, 1, 60, 0), ("rrf", 0.7, 1, 30, 0)]
    fusions += [("weighted", d, 1, 60, 0) for d in [0.5, 1.0]]
    fusions += [("hybrid", d, l, 60, 1.0) for d, l in itertools.product([0, 0.25, 0.5, 1.0], [0, 0.25, 0.5])]
    rows = []
    for size in args.sizes:
        config = Config().with_overrides(chunking={"max_chars": size})
        t = time.perf_counter()
        rag = RAG.build(["data/articles.txt"], index_dir=f"{args.workdir}/c{size}", config=config)
        build_s = time.perf_counter() - t
        for fusion, dw, lw, k, cw in fusions:
            cfg = config.with_overrides(retrieval={"fusion": fusion, "dense_weight": dw, "lexical_weight": lw, "rrf_k": k, "coverage_weight": cw})
            r = RAG(rag.indexes, cfg, embedder=rag.embedder)
            row = {"chunk": size, "fusion": fusion, "dense_w": dw, "lexical_w": lw, "rrf_k": k, "coverage_w": cw, **score(r, questions)}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
        print(f"# chunk {size}: build {build_s:.1f}s, {len(rag.indexes[0].chunks)} chunks", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
