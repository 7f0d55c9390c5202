"""Compare two evaluation runs: metric deltas and questions that changed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rag.evaluation.runner import read_run

logger = logging.getLogger(__name__)

RETRIEVAL_BASIS = "retrieval.hit@5"


@dataclass(frozen=True)
class MetricDelta:
    key: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Change:
    id: str
    question: str
    type: str


@dataclass(frozen=True)
class Comparison:
    """How run B differs from run A."""

    run_a: Path
    run_b: Path
    basis: str
    deltas: tuple[MetricDelta, ...]
    right_to_wrong: tuple[Change, ...]
    wrong_to_right: tuple[Change, ...]
    only_in_one: int


def _judgement(item: Mapping[str, Any], basis: str) -> bool | None:
    value = item["metrics"].get(basis)
    return None if value is None else bool(value)


def compare_runs(run_a: str | Path, run_b: str | Path) -> Comparison:
    """Compare two run folders.

    A question is right or wrong by its answer (``correct``: a gold answer in the
    reply, or a refusal for an unanswerable question) when both runs answered;
    when either run was retrieval-only, by ``retrieval.hit@5`` instead.
    """
    metrics_a, items_a = read_run(run_a)
    metrics_b, items_b = read_run(run_b)
    answered = all("correct" in i["metrics"] for i in items_a + items_b)
    basis = "correct" if answered else RETRIEVAL_BASIS
    keys = list(metrics_a) + [k for k in metrics_b if k not in metrics_a]
    deltas = tuple(MetricDelta(k, metrics_a.get(k), metrics_b.get(k)) for k in keys)
    by_id_b = {i["id"]: i for i in items_b}
    worse, better = [], []
    for item in items_a:
        other = by_id_b.get(item["id"])
        if other is None:
            continue
        before, after = _judgement(item, basis), _judgement(other, basis)
        change = Change(item["id"], item["question"], item["type"])
        if before is True and after is False:
            worse.append(change)
        elif before is False and after is True:
            better.append(change)
    shared = len(set(by_id_b) & {i["id"] for i in items_a})
    only = len(items_a) + len(items_b) - 2 * shared
    return Comparison(Path(run_a), Path(run_b), basis, deltas, tuple(worse), tuple(better), only)


def format_comparison(c: Comparison, include_by_type: bool = False) -> str:
    """Plain-text table of deltas and the lists of changed questions."""

    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.4g}"

    rows = [d for d in c.deltas if include_by_type or not d.key.startswith("by_type.")]
    width = max([len("metric")] + [len(d.key) for d in rows])
    lines = [f"A: {c.run_a}", f"B: {c.run_b}", "", f"{'metric':<{width}}  {'A':>10}  {'B':>10}  {'B-A':>10}"]
    for d in rows:
        delta = "—" if d.delta is None else f"{d.delta:+.4g}"
        lines.append(f"{d.key:<{width}}  {num(d.a):>10}  {num(d.b):>10}  {delta:>10}")
    for title, changes in ((f"right -> wrong ({c.basis})", c.right_to_wrong), (f"wrong -> right ({c.basis})", c.wrong_to_right)):
        lines += ["", f"{title}: {len(changes)}"]
        lines += [f"  {ch.id} [{ch.type}] {ch.question}" for ch in changes]
    if c.only_in_one:
        lines += ["", f"{c.only_in_one} questions appear in only one run and were not compared"]
    return "\n".join(lines)


def comparison_to_dict(c: Comparison) -> dict[str, Any]:
    return {
        "run_a": str(c.run_a), "run_b": str(c.run_b), "basis": c.basis,
        "deltas": {d.key: {"a": d.a, "b": d.b, "delta": d.delta} for d in c.deltas},
        "right_to_wrong": [ch.id for ch in c.right_to_wrong],
        "wrong_to_right": [ch.id for ch in c.wrong_to_right],
        "only_in_one": c.only_in_one,
    }
