"""How well the answer check's signals tell right candidates from wrong ones, on tune runs.

    python benchmarks/answer_check_signals.py default=eval/runs/tune-default cmrc=eval/runs/tune-cmrc

For each corpus: the cross-validated AUC (5 folds grouped by question, so one question
answered by two runs never sits on both sides) of the logistic regression the check uses,
with and without the generator's token probabilities, of a small gradient-boosted model,
and the AUC of each signal alone. Signals are recomputed from the runs' raw answers
(``rag.verify.fit.replay_rows``), token probabilities kept from the runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import zlib
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="CORPUS=RUN_DIR of a tune-split run")
    ap.add_argument("--out", default="benchmarks/results/answer_check_signals.json")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from rag.verify.answerability import FEATURES, TOKEN_SIGNALS
    from rag.verify.fit import replay_rows

    data = []
    for item in args.runs:
        corpus, run = item.split("=", 1)
        ids = [json.loads(line)["id"] for line in open(Path(run) / "predictions.jsonl", encoding="utf-8")]
        data += [(row, f"{corpus}/{qid}") for row, qid in zip(replay_rows(run, corpus), ids) if row.has_candidate]
    names = list(FEATURES)
    means = {n: float(np.mean([r.signals[n] for r, _ in data if n in r.signals] or [0.0])) for n in names}
    x = np.array([[r.signals.get(n, means[n]) for n in names] for r, _ in data])
    y = np.array([int(r.right) for r, _ in data])
    corpus = np.array([r.corpus for r, _ in data])
    fold = np.array([zlib.crc32(q.encode()) % 5 for _, q in data])
    corpora = sorted(set(corpus))

    def cv(make, columns) -> dict[str, float]:
        p = np.zeros(len(y))
        for k in range(5):
            model = make().fit(x[fold != k][:, columns], y[fold != k])
            p[fold == k] = model.predict_proba(x[fold == k][:, columns])[:, 1]
        return {c: round(float(roc_auc_score(y[corpus == c], p[corpus == c])), 3) for c in corpora}

    every = list(range(len(names)))
    no_tokens = [i for i, n in enumerate(names) if n not in TOKEN_SIGNALS]
    report = {
        "candidates": {c: int((corpus == c).sum()) for c in corpora},
        "right": {c: round(float(y[corpus == c].mean()), 3) for c in corpora},
        "logistic regression": cv(lambda: LogisticRegression(C=1.0, max_iter=2000), every),
        "logistic regression, no token probabilities": cv(lambda: LogisticRegression(C=1.0, max_iter=2000), no_tokens),
        "gradient boosting (depth 3)": cv(lambda: HistGradientBoostingClassifier(max_depth=3, max_iter=100, learning_rate=0.05), every),
        "signal alone": {n: {c: round(float(roc_auc_score(y[corpus == c], x[corpus == c][:, i])), 3) for c in corpora}
                         for i, n in enumerate(names)},
        "runs": args.runs,
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
