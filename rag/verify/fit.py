"""Fit the answerability model on evaluation runs of the *tune* splits.

Input: run folders written by ``rag eval`` (``predictions.jsonl`` holds, per
question, the answer check's ``signals``, the candidate answer and whether it
is right). Runs must be made with ``answer.min_evidence = 0`` so that every
question has a candidate.

- The model: a logistic regression (scikit-learn) on :data:`FEATURES`, every
  corpus given the same total weight, so a small corpus counts as much as a big one.
  Replayed runs (:func:`replay_rows`) give each question two rows where the extractive
  reader found a sentence, the generator's and its own (one ``group``): the model is fitted
  on both, and utility counts the one the check would answer with (the reader's where
  it clears the threshold, else the higher scored).
- The regularisation strength: the smallest of ``C_GRID`` (the most regularised) whose
  5-fold cross-validated utility is within ``CV_TOLERANCE`` of the best: differences that
  small are noise, and the smaller weights carry better to text unlike the tune splits.
- The threshold: the one that maximises, averaged over corpora, the utility
  ``(right answers + refused unanswerable questions - WRONG_COST * wrong answers) / questions``.
  A wrong answer costs more than a refusal: a refusal is honest, a wrong answer misleads.
- ``min_evidence``: the largest value on a grid that drops at most
  ``MAX_LOST`` of each corpus's right candidates before generation.

Only tune runs may be given; the report on check comes from ``rag eval`` runs.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

from rag.verify import HARD_REFUSALS
from rag.verify.answerability import FEATURES, TOKEN_SIGNALS, AnswerabilityModel

logger = logging.getLogger(__name__)

WRONG_COST = 0.5
MAX_LOST = 0.01
EVIDENCE_GRID = tuple(round(0.05 * i, 2) for i in range(0, 11))
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
CV_TOLERANCE = 0.005


@dataclass(frozen=True)
class Row:
    corpus: str
    answerable: bool
    has_candidate: bool
    right: bool
    signals: dict[str, float]
    #: The question: a question's candidates (the generator's, the extractive reader's) share it,
    #: and the check answers with the one it scores highest. "": a question of its own.
    group: str = ""


def read_rows(run_dir: str | Path, corpus: str) -> list[Row]:
    rows = []
    with open(Path(run_dir) / "predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            rows.append(Row(corpus=corpus, answerable=bool(item["answerable"]),
                            has_candidate=_scorable(item.get("candidate", ""), item.get("refusal_reason", "")),
                            right=bool(item["metrics"].get("candidate_correct")), signals=item.get("signals") or {},
                            group=f"{run_dir}:{item['id']}"))
    return rows


def _scorable(candidate: str, reason: str) -> bool:
    """A candidate a threshold can answer: one refused by a hard constraint cannot be."""
    return bool(candidate) and reason not in HARD_REFUSALS


def replay_rows(run_dir: str | Path, corpus: str, rag: Any = None) -> list[Row]:
    """Rows of a run with the answer check's signals computed anew from its stored raw answers.

    Each question gets the passages the run gave it (its ``context``, with the scores
    it recorded), read from the run's index; the generator is not run. Lets new signals
    be fitted without generating every answer again, on any machine (retrieving again
    could rank differently where the embedding engine rounds differently).
    """
    from rag.config import Config
    from rag.evaluation import metrics as m
    from rag.pipeline import RAG
    from rag.questions import clean_question
    from rag.verify import AnswerCheck

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    rag = rag or RAG.load(config["eval"]["index_dir"], config=Config.from_dict(config["rag"]))
    check = AnswerCheck(rag.config.answer, generator=rag.config.generation.model)
    positions = {chunk.id: (n, i) for n, index in enumerate(rag.indexes) for i, chunk in enumerate(index.chunks)}
    rows = []
    with open(run_dir / "predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            question = clean_question(item["question"])  # what the pipeline asked
            passages = _run_passages(rag, positions, item, run_dir)
            # Every candidate the check weighs: the extractive reader's too, so that a model with the
            # ``extractive`` signal can be fitted whatever model judged the run.
            for verdict in check.candidates(question, item.get("raw", ""), passages, reader=True) or [check.refusal("unsupported")]:
                # Token probabilities come from the generator, which replay does not run: kept from
                # the run for the generator's own answer.
                stored = item.get("signals") or {}
                own = verdict.signals and (verdict.rescued or not verdict.extractive)  # a rescue follows the generator's refusal
                tokens = {k: stored[k] for k in TOKEN_SIGNALS if k in stored} if own else {}
                rows.append(Row(corpus=corpus, answerable=bool(item["answerable"]),
                                has_candidate=_scorable(verdict.candidate, verdict.reason),
                                right=m.candidate_correct(verdict.candidate, item["gold_answers"]),
                                signals=dict(verdict.signals) | tokens, group=f"{run_dir}:{item['id']}"))
    return rows


def _run_passages(rag: Any, positions: dict[str, tuple[int, int]], item: dict, run_dir: Path) -> list:
    """The passages a run's question was given, rebuilt from its index (``positions``: each
    chunk id's index and position in it) and the scores the run recorded."""
    from rag.records import Passage

    scores = {r["chunk_id"]: r for r in item.get("retrieved", [])}
    passages = []
    for chunk_id in item.get("context", []):
        if chunk_id not in positions or chunk_id not in scores:
            raise ValueError(f"{run_dir}: question {item['id']} was given chunk {chunk_id!r}, which its index or its "
                             "retrieved list lacks; replay needs the run's index (rebuild it as the run's config.json says)")
        n, i = positions[chunk_id]
        r = scores[chunk_id]
        passages.append(Passage(rag.indexes[n].chunks[i], float(r["score"]), r.get("dense_score"), r.get("lexical_score")))
    return passages


def _is_quote(row: Row) -> bool:
    """The extractive reader's own candidate (not a rescue of the generator's refusal)."""
    return bool(row.signals.get("extractive")) and not row.signals.get("explicit_refusal")


def _chosen(rows: Sequence[Row], scores: Sequence[float], threshold: float) -> tuple[list[Row], list[float]]:
    """Per question, the candidate the check answers with or refuses: the reader's own sentence
    where it clears ``threshold``, else the highest scored (as ``AnswerCheck.check``)."""
    groups: dict[object, list[tuple[Row, float]]] = {}
    for i, (row, score) in enumerate(zip(rows, scores)):
        groups.setdefault(row.group or i, []).append((row, score))
    chosen = [next((c for c in cands if _is_quote(c[0]) and c[0].has_candidate and c[1] >= threshold), None)
              or max(cands, key=lambda c: c[1]) for cands in groups.values()]
    return [r for r, _ in chosen], [s for _, s in chosen]


def utility(rows: Sequence[Row], answered: Sequence[bool]) -> float:
    """Mean utility of answering ``answered`` (see the module notes)."""
    total = 0.0
    for row, yes in zip(rows, answered):
        if yes:
            total += 1.0 if row.right else -WRONG_COST
        elif not row.answerable:
            total += 1.0
    return total / len(rows) if rows else 0.0


def choose_c(rows: Sequence[Row], folds: int = 5, exclude: Collection[str] = ()) -> tuple[float, dict[float, float]]:
    """The smallest regularisation strength whose cross-validated utility on ``rows`` (folds by
    position) is within ``CV_TOLERANCE`` of the best, and every strength's utility."""
    cv: dict[float, float] = {}
    order = {key: i for i, key in enumerate(dict.fromkeys(r.group or i for i, r in enumerate(rows)))}
    fold = [order[r.group or i] % folds for i, r in enumerate(rows)]  # a question's candidates share a fold
    for c in C_GRID:
        total = 0.0
        for k in range(folds):
            train = [r for r, f in zip(rows, fold) if f != k]
            held = [r for r, f in zip(rows, fold) if f == k]
            model, _ = fit(train, c, exclude)
            total += _mean_utility(held, [model.score(r.signals) if r.has_candidate else 0.0 for r in held], model.threshold)
        cv[c] = round(total / folds, 4)
    best = max(cv.values())
    return min(c for c in cv if cv[c] >= best - CV_TOLERANCE), cv


def _mean_utility(rows: Sequence[Row], scores: Sequence[float], threshold: float) -> float:
    rows, scores = _chosen(rows, scores, threshold)
    corpora = sorted({r.corpus for r in rows})
    return sum(utility([r for r in rows if r.corpus == k], [s >= threshold and r.has_candidate for r, s in zip(rows, scores) if r.corpus == k])
               for k in corpora) / len(corpora)


def fit(rows: Sequence[Row], c: float = 1.0, exclude: Collection[str] = ()) -> tuple[AnswerabilityModel, dict[str, Any]]:
    """The model and threshold fitted on ``rows`` (without the signals in ``exclude``), and a summary per corpus."""
    from sklearn.linear_model import LogisticRegression

    train = [r for r in rows if r.has_candidate]
    corpora = sorted({r.corpus for r in rows})
    size = {k: sum(1 for r in train if r.corpus == k) for k in corpora}
    # Signals no row has (token probabilities from an engine without them) are left out; a
    # signal some rows lack gets its mean over the rows that have it, as it will when scoring.
    names = tuple(n for n in FEATURES if n not in exclude and any(n in r.signals for r in train))
    defaults = {n: sum(r.signals[n] for r in train if n in r.signals) / sum(1 for r in train if n in r.signals)
                for n in names if not all(n in r.signals for r in train) or n in TOKEN_SIGNALS}
    x = [[r.signals.get(name, defaults.get(name, 0.0)) for name in names] for r in train]
    y = [int(r.right) for r in train]
    weights = [len(train) / (len(corpora) * size[r.corpus]) for r in train]
    clf = LogisticRegression(C=c, max_iter=1000)
    clf.fit(x, y, sample_weight=weights)
    model = AnswerabilityModel(weights=tuple(float(w) for w in clf.coef_[0]), intercept=float(clf.intercept_[0]), threshold=0.5,
                               features=names, defaults=defaults)
    scores = [model.score(r.signals) if r.has_candidate else 0.0 for r in rows]
    best = (-1e9, 0.5)
    for t in sorted({round(s, 3) for s in scores} | {0.0}):
        u = _mean_utility(rows, scores, t)
        if u > best[0] + 1e-12:
            best = (u, t)
    model = AnswerabilityModel(weights=model.weights, intercept=model.intercept, threshold=best[1], features=names, defaults=defaults)
    summary = {k: _summary([r for r in rows if r.corpus == k], [s for r, s in zip(rows, scores) if r.corpus == k], best[1]) for k in corpora}
    return model, {"threshold": best[1], "utility": round(best[0], 4), "corpora": summary}


def _summary(rows: Sequence[Row], scores: Sequence[float], threshold: float) -> dict[str, float]:
    rows, scores = _chosen(rows, scores, threshold)
    answered = [s >= threshold and r.has_candidate for r, s in zip(rows, scores)]
    ans = [(r, a) for r, a in zip(rows, answered) if r.answerable]
    un = [(r, a) for r, a in zip(rows, answered) if not r.answerable]
    return {
        "questions": len(rows),
        "accuracy": round(sum(r.right and a for r, a in ans) / len(ans), 4) if ans else 0.0,
        "candidate_accuracy": round(sum(r.right for r, _ in ans) / len(ans), 4) if ans else 0.0,
        "false_refusal": round(sum(not a for _, a in ans) / len(ans), 4) if ans else 0.0,
        "refusal_recall": round(sum(not a for _, a in un) / len(un), 4) if un else 0.0,
    }


def fit_min_evidence(rows: Sequence[Row]) -> float:
    """The largest grid value that drops at most MAX_LOST of each corpus's right candidates."""
    best = 0.0
    for value in EVIDENCE_GRID:
        ok = True
        for k in {r.corpus for r in rows}:
            right = [r for r in rows if r.corpus == k and r.right]
            lost = sum(1 for r in right if r.signals.get("evidence", 0.0) < value)
            ok &= not right or lost / len(right) <= MAX_LOST
        if ok:
            best = value
    return best


def write_model(model: AnswerabilityModel, path: str | Path, fitted_on: str) -> None:
    data = AnswerabilityModel(model.weights, model.intercept, model.threshold, model.features, fitted_on, model.defaults).to_dict()
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
