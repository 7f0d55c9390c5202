"""Shared helpers for the benchmark scripts: timing, memory, tables, JSON results.

Benchmarks are scripts, not tests: each prints a table and writes
``benchmarks/results/<name>.json`` holding the rows and the machine they ran on,
and each compares our path with a baseline measured in the same run (on a
shared machine only ratios within one run mean much).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.config import available_cores

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cores = available_cores()
    info: dict[str, Any] = {"python": platform.python_version(), "cores": cores, "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def rss_mb(kind: str = "VmRSS") -> float:
    """Current resident memory of this process in MB: ``VmRSS`` (all), ``RssAnon``
    (the process's own memory) or ``RssFile`` (pages of mapped files, page cache the
    kernel can drop and read again)."""
    try:
        for line in open("/proc/self/status", encoding="utf-8"):
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3)}


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` holds the elapsed seconds."""

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self._start


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (missing cells left blank)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the rows, the machine and ``extra``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **extra, "rows": list(rows)}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def load_dev_questions(path: str | Path = "eval/dev_questions.jsonl", answerable_only: bool = False) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["answers"]] if answerable_only else rows
