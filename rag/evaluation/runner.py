"""Run a question set through a RAG object and write one run folder.

A run folder holds ``config.json`` (the resolved configuration and the run's
settings), ``predictions.jsonl`` (one record per question, written as the run
goes so a failed run still shows its work), ``metrics.json`` and ``report.md``
with its plots.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Sequence

from tqdm.auto import tqdm

from rag.errors import RagError
from rag.questions import clean_question
from rag.evaluation import metrics as m
from rag.errors import EvaluationError
from rag.records import Answer, Passage

logger = logging.getLogger(__name__)

UNANSWERABLE = "unanswerable"


class Answerer(Protocol):
    """What a run needs from the pipeline (``rag.pipeline.RAG`` or a test fake)."""

    def retrieve(self, question: str, top_k: int | None = None) -> list[Passage]: ...

    def ask(self, question: str, history=None, top_k: int | None = None, generator=None) -> Answer: ...

    def resolve_doc_id(self, doc_id: str) -> str: ...


@dataclass(frozen=True)
class EvalQuestion:
    """One line of a question file (schema in ``eval/README.md``)."""

    id: str
    question: str
    answers: tuple[str, ...]
    doc_ids: tuple[str, ...]
    type: str
    evidence: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    wall_s: float


def load_questions(path: str | Path) -> list[EvalQuestion]:
    """Read and check a question JSONL file; errors name the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise EvaluationError(f"cannot read question file {path}: {e}") from e
    questions: list[EvalQuestion] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
            q = EvalQuestion(
                id=str(row["id"]), question=row["question"], answers=tuple(row.get("answers", ())),
                doc_ids=tuple(row.get("doc_ids", ())), type=row["type"], evidence=row.get("evidence", ""),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise EvaluationError(f"{where}: not a question record ({e!r}); see eval/README.md for the schema") from e
        if not isinstance(q.question, str) or not q.question.strip():
            raise EvaluationError(f"{where}: the question text is empty")
        if (q.type == UNANSWERABLE) == q.answerable:
            raise EvaluationError(f"{where}: type {q.type!r} but {len(q.answers)} answers; only 'unanswerable' has none")
        if q.answerable and not q.doc_ids:
            raise EvaluationError(f"{where}: an answerable question needs gold doc_ids")
        if q.id in seen:
            raise EvaluationError(f"{where}: duplicate question id {q.id!r}")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise EvaluationError(f"{path} holds no questions")
    return questions


def default_run_dir(name: str, root: str | Path = "eval/runs") -> Path:
    return Path(root) / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"


def _passage_row(rank: int, p: Passage, doc_id: str, relevant: bool | None) -> dict[str, Any]:
    return {"rank": rank, "doc_id": doc_id, "chunk_id": p.chunk_id, "score": p.score,
            "dense_score": p.dense_score, "lexical_score": p.lexical_score, "relevant": relevant}


def _cited_passages(q: EvalQuestion, answer: Answer) -> list[dict[str, Any]]:
    """One row per distinct cited passage (several sentences may cite the same one)."""
    rows: dict[int, dict[str, Any]] = {}
    for c in answer.citations:
        if c.marker in rows:
            continue
        ok_marker = 1 <= c.marker <= len(answer.passages) and answer.passages[c.marker - 1].chunk_id == c.chunk_id
        passage = answer.passages[c.marker - 1] if ok_marker else next(
            (p for p in answer.passages if p.chunk_id == c.chunk_id), None)
        if passage is None:
            raise EvaluationError(f"question {q.id}: citation [{c.marker}] names chunk {c.chunk_id}, which is not among the answer's passages")
        rows[c.marker] = {"marker": c.marker, "doc_id": passage.doc_id, "chunk_id": passage.chunk_id, "quote": c.quote,
                          "contains_answer": q.answerable and m.contains_answer(passage.text, q.answers)}
    return list(rows.values())


def evaluate_question(rag: Answerer, q: EvalQuestion, retrieval_only: bool, top_k: int | None) -> dict[str, Any]:
    """Ask one question and return its prediction record with per-question metrics."""
    gold = {rag.resolve_doc_id(d) for d in q.doc_ids}
    started = time.perf_counter()
    # The same cleaning `rag search` and the pipeline apply before retrieval.
    passages = rag.retrieve(clean_question(q.question), top_k=m.RETRIEVAL_DEPTH)
    retrieve_ms = (time.perf_counter() - started) * 1000
    doc_ids = [rag.resolve_doc_id(p.doc_id) for p in passages]
    rel = m.relevance([(d, p.text) for d, p in zip(doc_ids, passages)], gold, q.answers) if q.answerable else None
    scores: dict[str, Any] = m.retrieval_scores(rel) if rel is not None else {k: None for k in m.RETRIEVAL_METRICS}
    record: dict[str, Any] = {
        "id": q.id, "question": q.question, "type": q.type, "answerable": q.answerable,
        "gold_answers": list(q.answers), "gold_doc_ids": sorted(gold),
        "retrieved": [_passage_row(i, p, d, None if rel is None else rel[i - 1])
                      for i, (p, d) in enumerate(zip(passages, doc_ids), start=1)],
        "timings": {"retrieve_ms": retrieve_ms, "total_ms": retrieve_ms},
    }
    if not retrieval_only:
        started = time.perf_counter()
        answer = rag.ask(q.question, top_k=top_k)
        record["timings"]["total_ms"] = (time.perf_counter() - started) * 1000
        record["timings"]["pipeline"] = dict(answer.timings)
        short = m.short_answer(answer.text)
        cited = _cited_passages(q, answer)
        correct = sum(1 for c in cited if c["contains_answer"])
        record.update(answer=answer.text, raw=answer.raw, short_answer=short, refused=answer.refused, cited=cited,
                      context=[p.chunk_id for p in answer.passages], candidate=answer.candidate,
                      answerability=answer.score, refusal_reason=answer.refusal_reason,
                      signals=answer.signals)
        scores["refused"] = 1.0 if answer.refused else 0.0
        # Whether the answer before the answer check's threshold is right.
        scores["candidate_correct"] = m.candidate_correct(answer.candidate, q.answers)
        if q.answerable:
            scores.update({
                "answer.accuracy": m.answer_accuracy(short, q.answers),
                "answer.exact_match": m.exact_match(short, q.answers),
                "answer.f1": m.f1_score(short, q.answers),
                "answer.cmrc_f1": m.cmrc_f1(short, q.answers),
                "answer.coverage_accuracy": 1.0 if m.coverage_correct(short, q.answers) else 0.0,
                "citation.cited": len(cited), "citation.correct": correct,
                "citation.precision": correct / len(cited) if cited else None,
                "citation.supported": 1.0 if correct else 0.0,
            })
            scores["correct"] = scores["answer.accuracy"] == 1.0
        else:
            scores["correct"] = answer.refused
    record["metrics"] = scores
    return record


def run_eval(
    rag: Answerer,
    questions: Sequence[EvalQuestion],
    run_dir: str | Path,
    *,
    retrieval_only: bool = False,
    top_k: int | None = None,
    settings: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    allow_fallback: bool = False,
) -> RunResult:
    """Evaluate ``questions`` with ``rag`` and write the run folder ``run_dir``.

    The first question is answered once, untimed, before the run so that model
    loading is not counted as latency. Raises EvaluationError when a question
    fails or a metric cannot be computed; predictions written so far are kept.
    A generator that could not load and fell back to the extractive one would be
    scored as the system asked for, so that also raises EvaluationError unless
    ``allow_fallback`` (then config.json records the fallback).
    """
    from rag.evaluation.report import write_report

    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise EvaluationError(f"run folder {run_dir} already exists and is not empty; choose another --out or --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"eval": {**(settings or {}), "retrieval_only": retrieval_only, "top_k": top_k,
                         "retrieval_depth": m.RETRIEVAL_DEPTH, "questions": len(questions),
                         "answer_check_model": _check_model(rag)},
                "rag": config}
    _write_json(run_dir / "config.json", resolved)
    started = time.perf_counter()
    try:
        rag.retrieve(clean_question(questions[0].question), top_k=m.RETRIEVAL_DEPTH)
        notice = "" if retrieval_only else getattr(rag.ask(questions[0].question, top_k=top_k), "notice", "")
    except RagError as e:
        raise EvaluationError(f"warm-up on question {questions[0].id} failed: {e}") from e
    if notice:
        if not allow_fallback:
            raise EvaluationError(
                f"the generator fell back to the extractive one ({notice}); this run would score another "
                "system than the one asked for. Fix the model (rag models provision), or pass --allow-fallback "
                "to score the fallback anyway"
            )
        resolved["eval"]["generator_fallback"] = notice
        _write_json(run_dir / "config.json", resolved)
    items = []
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        # disable=None: a bar on a terminal only; WENYUAN_NO_PROGRESS silences it as for embedding.
        quiet = True if os.environ.get("WENYUAN_NO_PROGRESS") else None
        for q in tqdm(questions, desc="eval", unit="q", disable=quiet):
            try:
                record = evaluate_question(rag, q, retrieval_only, top_k)
            except EvaluationError:
                raise
            except RagError as e:
                raise EvaluationError(f"question {q.id} failed: {e}") from e
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            items.append(record)
    wall_s = time.perf_counter() - started
    metrics = m.aggregate(items, retrieval_only=retrieval_only)
    metrics["run.wall_s"] = wall_s
    _write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, metrics, items, resolved)
    logger.info("evaluation run written to %s (%.1fs)", run_dir, wall_s)
    return RunResult(run_dir, metrics, wall_s)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_run(run_dir: str | Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``metrics.json`` and the prediction records of a finished run."""
    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        with open(run_dir / "predictions.jsonl", encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise EvaluationError(f"{run_dir} is not a finished evaluation run ({e})") from e
    return metrics, items


def _check_model(rag: Answerer) -> str | None:
    """The answer check's model file (from the working folder where it lies below it), or None
    for a pipeline without one (a test fake)."""
    path = getattr(getattr(getattr(rag, "answerer", None), "check", None), "model_path", None)
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
