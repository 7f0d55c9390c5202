"""Fit the answer check's model (rag/verify/model.json) on tune-split evaluation runs.

    rag eval --questions eval/sets/default/tune.jsonl --index-dir index/eval-default \
        --config benchmarks/tune_runs.toml --out eval/runs/tune-default
    rag eval --questions eval/sets/cmrc/tune.jsonl --index-dir index/eval-cmrc \
        --config benchmarks/tune_runs.toml --out eval/runs/tune-cmrc
    python benchmarks/answer_check_fit.py default=eval/runs/tune-default cmrc=eval/runs/tune-cmrc --write

With --replay the runs' raw answers are checked again (no generation), which also
gives each question the extractive reader's candidate beside the generator's: the
bundled model.json is fitted that way (its ``fitted_on`` lists the runs).

Prints the fitted weights, the threshold and min_evidence with the tune figures
per corpus, and writes benchmarks/results/answer_check_fit.json. Only tune runs
belong here: the check splits are for `rag eval` reports.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.verify.answerability import MODEL_PATH
from rag.verify.fit import choose_c, fit, fit_min_evidence, read_rows, replay_rows, write_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="CORPUS=RUN_DIR of a tune-split run")
    ap.add_argument("--c", type=float, default=None, help="inverse regularisation strength (default: chosen by cross-validation)")
    ap.add_argument("--write", action="store_true", help="write the model to --model-file")
    ap.add_argument("--model-file", default=str(MODEL_PATH), help=f"where --write puts the model (default: {MODEL_PATH}, the default generator's)")
    ap.add_argument("--replay", action="store_true", help="recompute the signals from the runs' raw answers (after a signal changed)")
    ap.add_argument("--out", default="benchmarks/results/answer_check_fit.json")
    ap.add_argument("--exclude", default="", help="comma-separated signals to leave out (to measure what one adds)")
    args = ap.parse_args()
    rows, sources = [], []
    for item in args.runs:
        corpus, run = item.split("=", 1)
        config = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
        questions = config["eval"].get("questions_file", "")
        if "tune" not in Path(questions).name:
            raise SystemExit(f"{run} was run on {questions!r}, not a tune split: fit on tune only")
        rows += replay_rows(run, corpus) if args.replay else read_rows(run, corpus)
        sources.append(f"{corpus}: {questions} ({run})")
    cv = {}
    exclude = [name for name in args.exclude.split(",") if name]
    c = args.c if args.c is not None else None
    if c is None:
        c, cv = choose_c(rows, exclude=exclude)
    model, summary = fit(rows, c=c, exclude=exclude)
    min_evidence = fit_min_evidence(rows)
    report = {"weights": dict(zip(model.features, [round(w, 4) for w in model.weights])), "defaults": model.defaults, "intercept": round(model.intercept, 4),
              "min_evidence": min_evidence, "c": c, "cv_utility": cv, **summary, "sources": sources}
    print(json.dumps(report, ensure_ascii=False, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.write:
        write_model(model, args.model_file, "tune splits: " + "; ".join(sources))


if __name__ == "__main__":
    main()
