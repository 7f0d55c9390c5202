"""Markdown table of the check-split figures of finished `rag eval` runs.

    python benchmarks/check_table.py "before, default=eval/reports/check-default-before" "after, default=eval/reports/check-default"

One row per run: retrieval hit@1/hit@5, accuracy by containment and by gold
coverage, CMRC F1, citation precision, refusal recall, false-refusal rate,
latency p50/p95 and the risk-coverage area.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    ("hit@1", "retrieval.hit@1"), ("hit@5", "retrieval.hit@5"), ("accuracy", "answer.accuracy"),
    ("gold coverage", "answer.coverage_accuracy"), ("F1", "answer.cmrc_f1"), ("citation P", "citation.precision"),
    ("unanswerable refused", "refusal.recall"), ("answerable refused", "refusal.false_rate"),
    ("p50 s", "latency.total.p50_ms"), ("p95 s", "latency.total.p95_ms"), ("risk-coverage AUC", "risk_coverage.auc"),
)


def rescored(run: str) -> dict[str, float]:
    """Gold coverage and CMRC F1 from a run's predictions (runs made before those metrics existed)."""
    from rag.evaluation.metrics import cmrc_f1, coverage_correct

    items = [json.loads(line) for line in open(Path(run) / "predictions.jsonl", encoding="utf-8") if line.strip()]
    answerable = [i for i in items if i["answerable"]]
    return {
        "answer.coverage_accuracy": sum(coverage_correct(i["short_answer"], i["gold_answers"]) for i in answerable) / len(answerable),
        "answer.cmrc_f1": sum(cmrc_f1(i["short_answer"], i["gold_answers"]) for i in answerable) / len(answerable),
    }


def row(label: str, run: str) -> str:
    metrics = json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))
    if "answer.coverage_accuracy" not in metrics:
        metrics.update(rescored(run))
    cells = []
    for _, key in COLUMNS:
        value = metrics.get(key)
        if value is None:
            cells.append("–")
        elif key.startswith("latency"):
            cells.append(f"{value / 1000:.1f}")
        else:
            cells.append(f"{value:.3f}")
    n = f"{metrics.get('count.answerable', '?')}+{metrics.get('count.unanswerable', '?')}"
    return f"| {label} ({n}) | " + " | ".join(cells) + " |"


def main() -> None:
    print("| run (answerable+unanswerable) | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    for arg in sys.argv[1:]:
        label, run = arg.split("=", 1)
        print(row(label, run))


if __name__ == "__main__":
    main()
