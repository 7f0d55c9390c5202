"""Compare prompt or engine variants on the tune splits with the shipped answer check
(the one bundled for the run's generator, as `rag` picks it).

For each tune run (a `rag eval` folder made with ``benchmarks/tune_runs.toml`` settings, so
every question has a candidate): the share of answerable questions whose candidate holds a
gold answer, the share answered right after the check, false refusals, refused unanswerable
questions, and the utility the check is fitted for (rag/verify/fit.py). A run written
before a signal changed is given as ``@RUN``: its signals are computed anew from its raw
answers (retrieval again, no generation).

    python benchmarks/tune_compare.py @eval/reports/tune-runs/t-base-default eval/reports/tune-runs/t-ff200x-default
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rag.verify.answerability import load_model, model_path_for
from rag.verify.fit import read_rows, replay_rows, utility


def summary(run: str) -> dict[str, float]:
    config = json.loads((Path(run.lstrip("@")) / "config.json").read_text(encoding="utf-8"))
    model = load_model(model_path_for(config["rag"]["generation"]["model"], config["rag"]["answer"].get("model", "")))
    rows = replay_rows(run[1:], "tune") if run.startswith("@") else read_rows(run, "tune")
    answered = [r.has_candidate and model.score(r.signals) >= model.threshold for r in rows]
    ans = [(r, a) for r, a in zip(rows, answered) if r.answerable]
    un = [a for r, a in zip(rows, answered) if not r.answerable]
    return {"questions": len(rows), "candidate right": sum(r.right for r, _ in ans) / len(ans),
            "right after the check": sum(r.right and a for r, a in ans) / len(ans),
            "answerable refused": sum(not a for _, a in ans) / len(ans),
            "unanswerable refused": sum(not a for a in un) / len(un) if un else 0.0, "utility": utility(rows, answered)}


def main() -> None:
    runs = sys.argv[1:]
    if not runs:
        raise SystemExit(__doc__)
    for run in runs:
        s = summary(run)
        print(f"{run}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))


if __name__ == "__main__":
    main()
