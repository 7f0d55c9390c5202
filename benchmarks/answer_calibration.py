"""Calibrate the refusal thresholds on the dev set.

Generates each dev answer once (cached in a JSONL file, keyed by backend and
prompt version), then replays verification for a grid of thresholds, printing
accuracy, refusal recall, false-refusal rate and citation precision for each,
and for the default thresholds with each on/off check (answer type, event, subject).

    python benchmarks/answer_calibration.py --backend causal --cache benchmarks/results/raw_causal.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

from rag.answering import Answerer
from rag.refusal import RefusalPolicy, evidence
from rag.evaluation.metrics import contains_answer
from rag.pipeline import RAG


def generate_all(rag: RAG, questions: list[dict], backend: str, cache: Path) -> list[dict]:
    done = {}
    if cache.exists():
        done = {r["id"]: r for r in map(json.loads, cache.read_text(encoding="utf-8").splitlines())}
    gen = rag.answerer.generator(backend)
    with open(cache, "a", encoding="utf-8") as f:
        for q in questions:
            if q["id"] in done:
                continue
            passages = rag.retrieve(q["question"])
            t = time.perf_counter()
            raw = "".join(gen.stream(q["question"], passages))
            row = {"id": q["id"], "raw": raw, "seconds": round(time.perf_counter() - t, 2)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[q["id"]] = row
            print(q["id"], row["seconds"], raw[:80].replace("\n", " "), flush=True)
    return [done[q["id"]] for q in questions]


def score(rag: RAG, questions: list[dict], raws: list[dict], policy: RefusalPolicy, passages_by_q) -> dict:
    answerer = Answerer(rag.retrieve, rag.config.generation, policy)
    acc = refused_ok = false_ref = cites = good_cites = 0
    n_ans = sum(1 for q in questions if q["answers"])
    n_un = len(questions) - n_ans
    for q, r in zip(questions, raws):
        passages = passages_by_q[q["id"]]
        if evidence(q["question"], passages) < policy.min_evidence:
            text, citations, refused = "", (), True
        else:
            text, citations, refused = answerer._verify(q["question"], r["raw"], passages)
        if not q["answers"]:
            refused_ok += refused
            continue
        false_ref += refused
        acc += (not refused) and contains_answer(text, q["answers"])
        for c in citations:
            cites += 1
            good_cites += contains_answer(passages[c.marker - 1].text, q["answers"])
    return {
        "accuracy": round(acc / n_ans, 4),
        "refusal.recall": round(refused_ok / max(1, n_un), 4),
        "refusal.false_rate": round(false_ref / n_ans, 4),
        "citation.precision": round(good_cites / max(1, cites), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", default="eval/dev_questions.jsonl")
    ap.add_argument("--index-dir", default="index/default")
    ap.add_argument("--backend", default="causal")
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    rag = RAG.load(args.index_dir)
    questions = [json.loads(line) for line in open(args.questions, encoding="utf-8") if line.strip()]
    cache = Path(args.cache or f"benchmarks/results/raw_{args.backend}.jsonl")
    cache.parent.mkdir(parents=True, exist_ok=True)
    raws = generate_all(rag, questions, args.backend, cache)
    passages_by_q = {q["id"]: rag.retrieve(q["question"]) for q in questions}
    secs = sorted(r["seconds"] for r in raws)
    print(f"# generation p50 {secs[len(secs) // 2]:.2f}s p95 {secs[int(len(secs) * 0.95)]:.2f}s")
    rows = []
    for ev, sup, gr in itertools.product([0.3, 0.4, 0.5, 0.6], [0.4, 0.5, 0.6, 0.7], [0.3, 0.4, 0.5, 0.6, 0.7]):
        m = score(rag, questions, raws, RefusalPolicy(ev, sup, gr), passages_by_q)
        rows.append({"min_evidence": ev, "min_support": sup, "min_grounding": gr, **m})
    for r in sorted(rows, key=lambda r: (r["accuracy"] + r["refusal.recall"] - 2 * r["refusal.false_rate"]), reverse=True)[:15]:
        print(json.dumps(r))
    Path(str(cache).replace(".jsonl", "_grid.json")).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("# the default thresholds with each on/off check")
    for check in ("check_answer_type", "check_event", "check_subject"):
        for on in (True, False):
            m = score(rag, questions, raws, dataclasses.replace(RefusalPolicy(), **{check: on}), passages_by_q)
            print(json.dumps({check: on, **m}))


if __name__ == "__main__":
    main()
