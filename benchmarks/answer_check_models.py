"""Logistic regression (the shipped answer check) against small gradient-boosted trees.

Both are fitted on the same tune-split runs as ``benchmarks/answer_check_fit.py``
(same rows, same per-corpus sample weights, threshold chosen on tune by the same
utility, signals replayed from the runs' raw answers) and judged twice: by 5-fold cross-validation on tune, and on the stored
check-split runs of the README's *now* rows (``eval/reports/check-*-v2``), whose
signals the check computed when they ran. The check runs only judge: nothing here
is fitted on them. The tune runs (``eval/reports/tune-runs/``, the rows
``answer_check_fit.py`` fitted the shipped model on) are replayed over their indexes:

    rag index build eval/sets/default/corpus.jsonl --index-dir index/tuning/default-c300
    rag index build eval/sets/cmrc/corpus.jsonl --index-dir index/tuning/cmrc-c300
    python benchmarks/answer_check_models.py

Writes benchmarks/results/answer_check_models.json.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Sequence

from rag.verify.answerability import load_model
from rag.verify.fit import FEATURES, Row, _mean_utility, fit, read_rows, replay_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_results  # noqa: E402

RUNS = "eval/reports/tune-runs"
TUNE = [("default", f"{RUNS}/t-base-default"), ("default", f"{RUNS}/t-tf-default"), ("cmrc", f"{RUNS}/t-base-cmrc"),
        ("cmrc", f"{RUNS}/t-tf-cmrc"), ("cmrc", f"{RUNS}/t-base-cmrc-rest")]
CHECK = [("default", "eval/reports/check-default-v2"), ("cmrc", "eval/reports/check-cmrc-v2")]
FOLDS = 5

Scorer = Callable[[Sequence[Row]], list[float]]


def fit_lr(rows: Sequence[Row]) -> tuple[Scorer, float]:
    model, _ = fit(rows, 1.0)
    return (lambda rs: [model.score(r.signals) if r.has_candidate else 0.0 for r in rs]), model.threshold


def fit_gb(rows: Sequence[Row], depth: int) -> tuple[Scorer, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = [r for r in rows if r.has_candidate]
    names = [n for n in FEATURES if any(n in r.signals for r in train)]
    corpora = sorted({r.corpus for r in train})
    size = {c: sum(1 for r in train if r.corpus == c) for c in corpora}
    clf = HistGradientBoostingClassifier(max_depth=depth, max_iter=150, learning_rate=0.05, min_samples_leaf=20,
                                         l2_regularization=1.0, random_state=0)
    clf.fit([[r.signals.get(n, math.nan) for n in names] for r in train], [int(r.right) for r in train],
            sample_weight=[len(train) / (len(corpora) * size[r.corpus]) for r in train])

    def score(rs: Sequence[Row]) -> list[float]:
        x = [[r.signals.get(n, math.nan) for n in names] for r in rs]
        p = clf.predict_proba(x)[:, 1] if x else []
        return [float(s) if r.has_candidate else 0.0 for r, s in zip(rs, p)]

    scores = score(rows)
    best = (-1e9, 0.5)
    for t in sorted({round(s, 3) for s in scores} | {0.0}):
        u = _mean_utility(rows, scores, t)
        if u > best[0] + 1e-12:
            best = (u, t)
    return score, best[1]


def figures(rows: Sequence[Row], scores: Sequence[float], threshold: float) -> dict[str, float]:
    out: dict[str, float] = {"utility": round(_mean_utility(rows, scores, threshold), 4)}
    for corpus in ("default", "cmrc"):
        pairs = [(r, s) for r, s in zip(rows, scores) if r.corpus == corpus]
        answerable = [(r, r.has_candidate and s >= threshold) for r, s in pairs if r.answerable]
        unanswerable = [r.has_candidate and s >= threshold for r, s in pairs if not r.answerable]
        out[f"{corpus}_right"] = round(sum(yes and r.right for r, yes in answerable) / len(answerable), 3)
        out[f"{corpus}_false_refusal"] = round(sum(not yes for _, yes in answerable) / len(answerable), 3)
        out[f"{corpus}_refusal_recall"] = round(sum(not yes for yes in unanswerable) / len(unanswerable), 3)
    return out


def main() -> None:
    # Replayed, as answer_check_fit.py --replay fits the shipped model: the tune runs predate
    # some signals, which replay computes from their stored raw answers (needs their indexes).
    tune = [row for corpus, run in TUNE for row in replay_rows(run, corpus)]
    check = [row for corpus, run in CHECK for row in read_rows(run, corpus)]
    makers: dict[str, Callable[[Sequence[Row]], tuple[Scorer, float]]] = {
        "logistic regression, refitted here": fit_lr,
        "gradient-boosted trees, depth 2": lambda rows: fit_gb(rows, 2),
        "gradient-boosted trees, depth 3": lambda rows: fit_gb(rows, 3),
    }
    results = []
    for name, make in makers.items():
        cv = 0.0
        for k in range(FOLDS):
            score, threshold = make([r for i, r in enumerate(tune) if i % FOLDS != k])
            held = [r for i, r in enumerate(tune) if i % FOLDS == k]
            cv += _mean_utility(held, score(held), threshold)
        score, threshold = make(tune)
        results.append({"model": name, "tune_cv_utility": round(cv / FOLDS, 4), "threshold": threshold,
                        **{f"check_{k}": v for k, v in figures(check, score(check), threshold).items()}})
    shipped = load_model()  # fitted on replayed tune rows (answer_check_fit.py --replay): no CV figure here
    shipped_scores = [shipped.score(r.signals) if r.has_candidate else 0.0 for r in check]
    results.insert(0, {"model": "logistic regression, shipped (rag/verify/model.json)", "tune_cv_utility": None,
                       "threshold": shipped.threshold,
                       **{f"check_{k}": v for k, v in figures(check, shipped_scores, shipped.threshold).items()}})
    print(table(results))
    write_results("answer_check_models", results, tune_rows=len(tune), check_rows=len(check),
                  shipped_threshold=shipped.threshold, tune_runs=[r for _, r in TUNE], check_runs=[r for _, r in CHECK])


if __name__ == "__main__":
    main()
