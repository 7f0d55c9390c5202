"""Write the fixed tune/check evaluation sets under eval/sets/ (seeded; rerunning gives the same files).

    python eval/make_sets.py

For each corpus (``default``: data/articles.txt with eval/dev_questions.jsonl;
``cmrc``: eval/cmrc2018_trial/) it writes ``eval/sets/<corpus>/``:

- ``corpus.jsonl``: the evaluation corpus (documents left out removed);
- ``tune.jsonl`` and ``check.jsonl``: questions, the unanswerable ones grown by
  the procedures of ``rag/evaluation/splits.py`` (``evidence`` says which);
- ``split.json``: seed, document ids of each side, left-out documents, counts.

Fit on tune.jsonl; report on check.jsonl.
"""
from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.corpus import alias_map, load_documents  # noqa: E402
from rag.evaluation.runner import EvalQuestion, load_questions  # noqa: E402
from rag.evaluation.splits import (  # noqa: E402
    SplitResult, absent_attribute, drop_left_out, near_miss, organisations, question_groups, split_documents,
)

SEED = 20261202
LEFT_OUT_SHARE = 0.1  # of the default corpus's documents with questions, per side
# Grown unanswerable questions, as a share of a side's answerable ones (at most: a question is
# only grown where the procedure's checks pass). The default corpus has few hand-written
# unanswerable questions, so it grows more.
GROW = {"default": (0.3, 0.3), "cmrc": (0.08, 0.06)}


def _write(out: Path, docs, sides: dict[str, SplitResult], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    left = {d for s in sides.values() for d in s.left_out}
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in docs:
            if doc.id not in left:
                f.write(json.dumps({"id": doc.id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")
    for name, side in sides.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for q in side.questions:
                row = asdict(q)
                row["answers"], row["doc_ids"] = list(q.answers), list(q.doc_ids)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    split = {**meta, "seed": SEED, **{name: {"counts": s.counts(), "doc_ids": sorted(s.doc_ids), "left_out": sorted(s.left_out)}
                                      for name, s in sides.items()}}
    (out / "split.json").write_text(json.dumps(split, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for name, s in sides.items():
        print(out.name, name, s.counts())


def _grow(side: SplitResult, questions, entities_of, docs_by_id, kept_pool, seed: int, prefix: str,
          near_miss_share: float, attribute_share: float) -> None:
    n = sum(q.answerable for q in questions)
    side.questions = list(questions)
    side.questions += near_miss(questions, entities_of, docs_by_id, kept_pool, seed, max(2, round(near_miss_share * n)))
    side.questions += absent_attribute(entities_of, docs_by_id, kept_pool, seed + 1, max(2, round(attribute_share * n)), prefix)


def default_sets() -> None:
    docs = load_documents([ROOT / "data" / "articles.txt"])
    doc_of = alias_map(docs)
    by_id = {d.id: d for d in docs}
    questions = [replace(q, doc_ids=tuple(dict.fromkeys(doc_of[d] for d in q.doc_ids)),
                         evidence=q.evidence if q.answerable else "original: hand-written")
                 for q in load_questions(ROOT / "eval" / "dev_questions.jsonl")]
    groups = question_groups([q for q in questions if q.answerable], doc_of)
    in_groups = {d for g in groups for d in g}
    groups += [{d.id} for d in docs if d.id not in in_groups]  # articles no question asks about
    tune_docs, check_docs = split_documents(groups, SEED)
    rng = random.Random(SEED)
    entities_of = {d.id: organisations(d.text) for d in docs}
    sides = {}
    for name, side_docs in (("tune", tune_docs), ("check", check_docs)):
        asked = sorted({d for q in questions if q.answerable and set(q.doc_ids) <= side_docs for d in q.doc_ids})
        left = set(rng.sample(asked, max(1, round(LEFT_OUT_SHARE * len(asked)))))
        own = [q for q in questions if (q.answerable and set(q.doc_ids) <= side_docs)]
        # The hand-written unanswerable questions name no document: split them by the same seed.
        own += [q for q in questions if not q.answerable and (random.Random(f"{SEED}{q.id}").random() < 0.4) == (name == "check")]
        own = drop_left_out(own, left)
        side = SplitResult(doc_ids=sorted(side_docs - left), left_out=sorted(left))
        kept_pool = sorted(side_docs - left)
        _grow(side, own, entities_of, {k: v for k, v in by_id.items() if k not in left}, kept_pool,
              SEED + (0 if name == "tune" else 100), f"default-{name}-aa", *GROW["default"])
        sides[name] = side
    _write(ROOT / "eval" / "sets" / "default", docs, sides, {"source": "data/articles.txt + eval/dev_questions.jsonl"})


def _cmrc_entity(title: str) -> str:
    return re.sub(r"\s*[（(][^()（）]*[)）]\s*$", "", title).strip()


def cmrc_sets() -> None:
    base = ROOT / "eval" / "cmrc2018_trial"
    docs = load_documents([base / "corpus.jsonl"])
    by_id = {d.id: d for d in docs}
    questions: list[EvalQuestion] = []
    # The trial file holds one question with an empty text: it is skipped (and counted in split.json).
    rows = [json.loads(line) for line in (base / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    usable = [r for r in rows if r["question"].strip()]
    for r in usable:
        q = EvalQuestion(id=r["id"], question=r["question"], answers=tuple(r["answers"]), doc_ids=tuple(r["doc_ids"]), type=r["type"])
        if not q.answerable:  # asks about one of the 26 paragraphs left out of the corpus
            q = replace(q, evidence=f"left_out: {q.id.rsplit('_QUERY', 1)[0]}")
        questions.append(q)

    def paragraph(q: EvalQuestion) -> str:
        return q.doc_ids[0] if q.doc_ids else q.evidence.split(": ", 1)[1]

    groups = [{d.id} for d in docs] + [{p} for p in sorted({paragraph(q) for q in questions if not q.answerable})]
    tune_docs, check_docs = split_documents(groups, SEED)
    entities_of = {d.id: [e] for d in docs if len(e := _cmrc_entity(d.title)) >= 2}
    sides = {}
    for name, side_docs in (("tune", tune_docs), ("check", check_docs)):
        own = [q for q in questions if paragraph(q) in side_docs]
        kept = sorted(d for d in side_docs if d in by_id)
        side = SplitResult(doc_ids=kept, left_out=sorted(d for d in side_docs if d not in by_id))
        _grow(side, own, entities_of, by_id, kept, SEED + (0 if name == "tune" else 100), f"cmrc-{name}-aa", *GROW["cmrc"])
        sides[name] = side
    _write(ROOT / "eval" / "sets" / "cmrc", docs, sides,
           {"source": "eval/cmrc2018_trial (CMRC 2018 trial split, CC BY-SA 4.0)",
            "skipped_empty_questions": len(rows) - len(usable)})


if __name__ == "__main__":
    default_sets()
    cmrc_sets()
