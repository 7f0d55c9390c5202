"""Measure follow-up question handling: retrieval hit@1/hit@5 of the raw
follow-up, the rule-based rewrite (the default), and history concatenation.

    python benchmarks/followup_rewrite.py
"""
from __future__ import annotations

import json

from rag.evaluation.metrics import hit_at, relevance
from rag.pipeline import RAG
from rag.rewrite import rewrite_question


def main() -> None:
    rag = RAG.load("index/default")
    rows = [json.loads(line) for line in open("eval/followups.jsonl", encoding="utf-8")]
    variants = {
        "raw follow-up": lambda r: r["question"],
        "rule rewrite (default)": lambda r: rewrite_question(r["question"], [(h, "") for h in r["history"]]),
        "history + follow-up": lambda r: " ".join(r["history"] + [r["question"]]),
    }
    print(f"{'variant':26} hit@1  hit@5   ({len(rows)} follow-ups)")
    for name, make in variants.items():
        h1 = h5 = 0.0
        for r in rows:
            q = make(r)
            passages = rag.retrieve(q, top_k=5)
            rel = relevance([(p.doc_id, p.text) for p in passages], {rag.resolve_doc_id(d) for d in r["doc_ids"]}, r["answers"])
            h1 += hit_at(rel, 1)
            h5 += hit_at(rel, 5)
            if name.startswith("rule"):
                print(f"    {r['question']} -> {q}")
        print(f"{name:26} {h1 / len(rows):.3f}  {h5 / len(rows):.3f}")


if __name__ == "__main__":
    main()
