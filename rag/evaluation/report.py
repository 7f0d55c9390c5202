"""``report.md`` and its PNG plots for one evaluation run.

Plots are drawn on matplotlib's Agg canvas directly (no pyplot), so writing a
report never needs a display and leaves no global figure state behind.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from rag.evaluation import metrics as m

logger = logging.getLogger(__name__)

PLOTS = {"by_type": "by_type.png", "hit_at_k": "hit_at_k.png", "latency": "latency.png",
         "risk_coverage": "risk_coverage.png"}


def by_type_key(retrieval_only: bool) -> str:
    """The per-type figure's metric: answer accuracy, or hit@1 when nothing was answered."""
    return "retrieval.hit@1" if retrieval_only else "answer.accuracy"


def hit_curve(items: Sequence[Mapping[str, Any]], depth: int = m.RETRIEVAL_DEPTH) -> list[float]:
    """hit@k for k = 1..depth over answerable questions, from stored relevance flags."""
    rels = [[bool(r["relevant"]) for r in item["retrieved"]] for item in items if item["answerable"]]
    if not rels:
        return []
    return [sum(m.hit_at(rel, k) for rel in rels) / len(rels) for k in range(1, depth + 1)]


def _figure(width: float = 6.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_by_type(path: Path, values: dict[str, float], counts: dict[str, int], label: str) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    types = list(values)
    bars = ax.bar(types, [values[t] for t in types], color="#4c72b0")
    for bar, t in zip(bars, types):
        ax.annotate(f"{values[t]:.2f}\nn={counts[t]}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel(label)
    ax.set_title(f"{label} by question type")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_hit_curve(path: Path, curve: Sequence[float]) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    ks = list(range(1, len(curve) + 1))
    ax.plot(ks, curve, marker="o", color="#55a868")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("k (passages retrieved)")
    ax.set_ylabel("hit@k")
    ax.set_title("hit@k over answerable questions")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def plot_latency(path: Path, items: Sequence[Mapping[str, Any]], retrieval_only: bool) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    stages = ("retrieve",) if retrieval_only else ("retrieve", "total")
    for stage, color in zip(stages, ("#4c72b0", "#dd8452")):
        ax.hist([item["timings"][f"{stage}_ms"] for item in items], bins=30, alpha=0.7, color=color, label=stage)
    ax.set_xlabel("milliseconds per question")
    ax.set_ylabel("questions")
    ax.set_title("latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def plot_risk_coverage(path: Path, curve: Sequence[tuple[float, float]]) -> None:
    """Accuracy of the answered questions against the share answered, by answerability cutoff."""
    fig = _figure()
    ax = fig.add_subplot()
    coverage = [0.0] + [c for c, _ in curve]
    accuracy = [curve[0][1]] + [a for _, a in curve]
    ax.step(coverage, accuracy, where="pre", color="#c44e52")
    ax.plot(coverage[1:], accuracy[1:], "o", color="#c44e52", markersize=3)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("accuracy of answered")
    ax.set_title("risk-coverage by answerability score")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _fmt(key: str, value: float) -> str:
    if key.startswith("count.") or key.endswith(".count"):
        return str(int(value))
    if key.endswith("_ms") or key.endswith("_s"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_report(metrics: Mapping[str, float], items: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    """The Markdown text of ``report.md`` (plots referenced by file name)."""
    settings = config.get("eval", {})
    retrieval_only = bool(settings.get("retrieval_only"))
    rag_config = config.get("rag") or {}
    generation = rag_config.get("generation") or {}
    backend = "none (retrieval only)" if retrieval_only else " ".join(
        str(generation[k]) for k in ("backend", "model") if k in generation) or None
    lines = [f"# Evaluation run {settings.get('name', '')}", ""]
    lines += [f"- {k}: `{v}`" for k, v in (
        ("questions", settings.get("questions_file")), ("index", settings.get("index_dir")),
        ("generator", backend), ("answer check", settings.get("answer_check_model")), ("answer top_k", settings.get("top_k")),
        ("started", settings.get("started")),
    ) if v is not None]
    lines += ["", "## Metrics", ""]
    lines += _table(["metric", "value"], [[k, _fmt(k, v)] for k, v in metrics.items() if not k.startswith("by_type.")])

    counts: dict[str, int] = {}
    for item in items:
        counts[item["type"]] = counts.get(item["type"], 0) + 1
    keys = ["retrieval.hit@1", "retrieval.hit@5", "retrieval.mrr@10"]
    if not retrieval_only:
        keys = ["answer.accuracy", "answer.exact_match", "answer.f1", "refused"] + keys
    per_type = {k: m.mean_by_type(items, k) for k in keys}
    lines += ["", "## By question type", ""]
    rows = [[t, str(counts[t])] + [f"{per_type[k][t]:.3f}" if t in per_type[k] else "—" for k in keys] for t in sorted(counts)]
    lines += _table(["type", "n"] + keys, rows)
    lines += ["", f"![{by_type_key(retrieval_only)} by question type]({PLOTS['by_type']})"]

    curve = hit_curve(items)
    lines += ["", "## hit@k", ""]
    lines += _table([f"k={k}" for k in range(1, len(curve) + 1)], [[f"{v:.3f}" for v in curve]])
    lines += ["", f"![hit@k curve]({PLOTS['hit_at_k']})", "", "## Latency", ""]
    lines += [f"![latency histogram]({PLOTS['latency']})"]
    if not retrieval_only and m.risk_coverage(items):
        auc = metrics.get("risk_coverage.auc")
        lines += ["", "## Risk–coverage", ""]
        lines += [f"Questions answered in order of answerability score; area under the curve "
                  f"{auc:.3f}." if auc is not None else "Questions answered in order of answerability score."]
        lines += ["", f"![risk-coverage curve]({PLOTS['risk_coverage']})"]

    misses = [i for i in items if i["answerable"] and not any(r["relevant"] for r in i["retrieved"])]
    lines += ["", f"## Answerable questions with no relevant passage in the top {m.RETRIEVAL_DEPTH} ({len(misses)})", ""]
    lines += [f"- {i['id']} ({i['type']}): {i['question']} — gold {', '.join(i['gold_answers'])}" for i in misses] or ["(none)"]
    if not retrieval_only:
        wrong = [i for i in items if i["metrics"].get("correct") is False]
        lines += ["", f"## Wrong answers ({len(wrong)})", ""]
        lines += [f"- {i['id']} ({i['type']}): {i['question']} — answered “{i['short_answer'] or '(refused)'}”, "
                  f"gold {', '.join(i['gold_answers']) or '(refuse)'}" for i in wrong] or ["(none)"]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, metrics: Mapping[str, float], items: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Path:
    """Write ``report.md`` and its plots into ``run_dir`` (the risk-coverage plot only
    when the predictions carry answerability scores)."""
    retrieval_only = bool(config.get("eval", {}).get("retrieval_only"))
    plot_key = by_type_key(retrieval_only)
    values = m.mean_by_type(items, plot_key)
    counts = {t: sum(1 for i in items if i["type"] == t and i["metrics"].get(plot_key) is not None) for t in values}
    plot_by_type(run_dir / PLOTS["by_type"], values, counts, plot_key)
    plot_hit_curve(run_dir / PLOTS["hit_at_k"], hit_curve(items))
    plot_latency(run_dir / PLOTS["latency"], items, retrieval_only)
    curve = [] if retrieval_only else m.risk_coverage(items)
    if curve:
        plot_risk_coverage(run_dir / PLOTS["risk_coverage"], curve)
    path = run_dir / "report.md"
    path.write_text(render_report(metrics, items, config), encoding="utf-8")
    return path
