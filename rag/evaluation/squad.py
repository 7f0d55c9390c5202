"""SQuAD / CMRC 2018 reading-comprehension files as a corpus plus a question set.

A file ``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`` becomes
one document per distinct context and one :class:`EvalQuestion` per question
(type ``span``, or ``unanswerable`` for SQuAD 2.0's ``is_impossible`` / empty
answers). :meth:`SquadSet.leave_out` removes a seeded random share of the
contexts from the corpus and turns their questions unanswerable, which tests
refusal on questions that look answerable.

Example:
    >>> squad = load_squad("cmrc2018_dev.json").leave_out(0.2, seed=0)
    >>> squad.write_corpus(corpus_path(Path("index/squad-1a2b")))
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from rag.config import Config, default_index_dir
from rag.errors import EvaluationError
from rag.evaluation.runner import UNANSWERABLE, EvalQuestion

logger = logging.getLogger(__name__)

SPAN = "span"
FORMAT_HINT = 'expected {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}'


@dataclass(frozen=True)
class SquadContext:
    """One distinct context paragraph: a document of the evaluation corpus."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class SquadSet:
    """The contexts kept in the corpus, the questions, and the contexts left out."""

    source: Path
    contexts: tuple[SquadContext, ...]
    questions: tuple[EvalQuestion, ...]
    left_out: tuple[SquadContext, ...] = ()

    def leave_out(self, fraction: float, seed: int = 0) -> "SquadSet":
        """Remove ``round(fraction * contexts)`` contexts chosen with ``random.Random(seed)``;
        their questions lose answers and gold documents and become unanswerable."""
        if not 0.0 <= fraction < 1.0:
            raise EvaluationError(f"{self.source}: leave-out fraction {fraction} is outside [0, 1); use for example 0.2")
        count = round(fraction * len(self.contexts))
        chosen = set(random.Random(seed).sample(range(len(self.contexts)), count))
        removed = {c.id for i, c in enumerate(self.contexts) if i in chosen}
        questions = tuple(
            replace(q, answers=(), doc_ids=(), type=UNANSWERABLE) if set(q.doc_ids) & removed else q
            for q in self.questions
        )
        return SquadSet(
            self.source,
            tuple(c for c in self.contexts if c.id not in removed),
            questions,
            self.left_out + tuple(c for c in self.contexts if c.id in removed),
        )

    def documents(self) -> list[dict[str, str]]:
        """Corpus records ``{"id", "title", "text"}`` of the kept contexts."""
        return [{"id": c.id, "title": c.title, "text": c.text} for c in self.contexts]

    def write_corpus(self, path: Path) -> Path:
        """Write the kept contexts as a ``.jsonl`` corpus (left untouched when already equal)."""
        text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in self.documents())
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return path

    def summary(self) -> dict[str, Any]:
        """Counts for the run's config.json."""
        answerable = sum(1 for q in self.questions if q.answerable)
        return {
            "contexts_kept": len(self.contexts), "contexts_left_out": len(self.left_out),
            "left_out_ids": [c.id for c in self.left_out],
            "answerable": answerable, "unanswerable": len(self.questions) - answerable,
        }


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked to be a ``kind``; the error names the position and the schema."""
    if not isinstance(obj, dict):
        raise EvaluationError(f"{where}: expected an object, found {type(obj).__name__}; {FORMAT_HINT}")
    if key not in obj:
        raise EvaluationError(f"{where}: missing key {key!r}; {FORMAT_HINT}")
    value = obj[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise EvaluationError(f"{where}.{key}: expected {names}, found {type(value).__name__}")
    return value


def _question(qa: Any, doc_id: str, where: str) -> EvalQuestion:
    qid = _need(qa, "id", (str, int), where)
    text = _need(qa, "question", str, where)
    if not text.strip():
        raise EvaluationError(f"{where}.question: the question text is empty")
    impossible = bool(qa.get("is_impossible", False))
    raw = qa.get("answers", []) if impossible else _need(qa, "answers", list, where)
    answers: list[str] = []
    for j, answer in enumerate(raw if isinstance(raw, list) else []):
        value = _need(answer, "text", str, f"{where}.answers[{j}]").strip()
        if value and value not in answers:
            answers.append(value)
    if impossible or not answers:
        return EvalQuestion(id=str(qid), question=text, answers=(), doc_ids=(doc_id,), type=UNANSWERABLE)
    return EvalQuestion(id=str(qid), question=text, answers=tuple(answers), doc_ids=(doc_id,), type=SPAN)


def parse_squad(data: Any, source: Path) -> SquadSet:
    """Convert parsed SQuAD / CMRC 2018 JSON; errors name ``source`` and the position."""
    where = str(source)
    items = _need(data, "data", list, where)
    contexts: list[SquadContext] = []
    by_text: dict[str, str] = {}
    questions: list[EvalQuestion] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{where}: data[{i}]"
        title = str(item.get("title") or "") if isinstance(item, dict) else ""
        for k, paragraph in enumerate(_need(item, "paragraphs", list, at)):
            p_at = f"{at}.paragraphs[{k}]"
            text = _need(paragraph, "context", str, p_at).strip()
            if not text:
                raise EvaluationError(f"{p_at}.context: the context is empty")
            doc_id = by_text.get(text)
            if doc_id is None:  # a repeated context is one document
                doc_id = str(paragraph.get("id") or f"{title or 'ctx'}-{len(contexts) + 1}")
                if any(c.id == doc_id for c in contexts):
                    raise EvaluationError(f"{p_at}: context id {doc_id!r} is used by two different contexts; ids must be unique")
                by_text[text] = doc_id
                contexts.append(SquadContext(doc_id, title, text))
            for n, qa in enumerate(_need(paragraph, "qas", list, p_at)):
                q = _question(qa, doc_id, f"{p_at}.qas[{n}]")
                if q.id in seen:
                    raise EvaluationError(f"{p_at}.qas[{n}]: duplicate question id {q.id!r}")
                seen.add(q.id)
                questions.append(q)
    if not questions:
        raise EvaluationError(f"{where} holds no questions; {FORMAT_HINT}")
    return SquadSet(source, tuple(contexts), tuple(questions))


def load_squad(path: str | Path) -> SquadSet:
    """Read and convert a SQuAD / CMRC 2018 JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise EvaluationError(f"cannot read SQuAD file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8 JSON") from e
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {FORMAT_HINT}") from e
    squad = parse_squad(data, path)
    logger.info("%s: %d contexts, %d questions", path, len(squad.contexts), len(squad.questions))
    return squad


def squad_index_dir(path: str | Path, leave_out: float, seed: int) -> Path:
    """``index/squad-<12 hex>``: one index per file content, leave-out fraction and seed."""
    digest = hashlib.sha256(Path(path).read_bytes() + f"|leave_out={leave_out!r}|seed={seed}".encode()).hexdigest()
    return default_index_dir().parent / f"squad-{digest[:12]}"


def corpus_path(index_dir: Path) -> Path:
    """Where the corpus of ``index_dir`` is written: beside the folder, since a build
    replaces the folder's contents as a whole."""
    return index_dir.parent / f"{index_dir.name}.corpus.jsonl"


def build_squad_index(
    squad: SquadSet, index_dir: Path, config: Config, embedder_factory: Callable[[], object] | None = None,
) -> dict[str, int]:
    """Write the corpus and build (or reuse, when unchanged) its index; returns the index's counts.

    The same ``build_index`` as ``rag index build``: an index whose corpus and
    settings are unchanged is reused without embedding anything.
    """
    from rag.build import build_index

    if embedder_factory is None:
        def embedder_factory() -> object:
            from rag.embedding import Embedder

            return Embedder(config.embedding)

    corpus = squad.write_corpus(corpus_path(index_dir))
    index = build_index([corpus], index_dir, config, embedder_factory)
    counts = dict(index.manifest["counts"])
    if counts["documents"] + counts["aliases"] < len(squad.contexts):
        logger.warning("%d contexts were too short to index; their questions cannot be answered",
                       len(squad.contexts) - counts["documents"] - counts["aliases"])
    return counts
