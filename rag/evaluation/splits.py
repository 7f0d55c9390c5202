"""Fixed tune/check splits of a question set, and unanswerable questions grown by rule.

Why: thresholds fitted to a few dozen questions do not transfer. Every weight,
threshold and prompt choice is fitted on the *tune* part and judged on the
*check* part. Questions are split by document (documents that share a question
stay together), so no article is on both sides.

Unanswerable questions are grown by three documented procedures, never by hand:

- ``left_out``: a seeded share of documents is removed from the evaluation
  corpus; their questions must now be refused.
- ``near_miss``: the question's entity (a document title, or a named
  organisation) is swapped for another entity of the same kind that the corpus
  holds elsewhere; kept only when no document naming the new entity holds the
  words of what is asked.
- ``absent_attribute``: an entity of a document is asked for an attribute
  (founder, telephone number, …) whose keywords occur in no document naming it.

Everything is seeded; ``eval/make_sets.py`` writes the files under ``eval/sets/``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from rag.evaluation.runner import UNANSWERABLE, EvalQuestion
from rag.records import Document
from rag.textsim import bigrams, question_core

#: Share of documents (by count) that goes to the check side.
CHECK_SHARE = 0.4

# Named organisations in news text: a run of CJK characters ending in one of these.
_ORG_SUFFIXES = ("慈善总会", "基金会", "联合会", "促进会", "研究会", "研究院", "委员会", "服务中心", "救援队", "慈善会",
                 "商会", "学会", "协会")
_ORG = re.compile(r"[\u4e00-\u9fff]{2,14}?(?:" + "|".join(_ORG_SUFFIXES) + ")")
# A name does not start with these (they end the words before it: "由中国…", "向…").
_ORG_LEAD = re.compile(r"^(?:由|向|和|与|及|是|在|对|为|的|被|将|把|同|从|据|经|等|并|联合|携手|会同|组织|通过|指导)+")
# Words that mark a phrase ("更多的行业协会", "各行业协会") rather than a name.
_NOT_NAME = re.compile(r"[的各等多些其该本此]|行业协会$")
# A name we trust starts with a country-level word or holds a place level early ("重庆市…", "长汀县…").
_NAME_START = re.compile(r"^(?:中国|中华|全国|世界|国际|亚洲)|^[\u4e00-\u9fff]{1,5}?[省市区县州旗镇]")

#: (question template, keywords whose absence from every document naming the entity makes it unanswerable)
ATTRIBUTE_TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{e}的创始人是谁？", ("创始", "创办", "创立", "创建", "发起人")),
    ("{e}的总部设在哪座城市？", ("总部",)),
    ("{e}的联系电话是多少？", ("电话", "热线")),
    ("{e}的官方网站网址是什么？", ("网址", "网站", "www", "http")),
    ("{e}的注册资本是多少？", ("注册资本", "注册资金")),
    ("{e}的邮政编码是多少？", ("邮编", "邮政编码")),
    ("{e}的年度预算是多少？", ("预算",)),
    ("{e}有多少名员工？", ("员工", "职员", "雇员")),
)


@dataclass
class SplitResult:
    """Documents and questions of one side (tune or check)."""

    doc_ids: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    questions: list[EvalQuestion] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"documents": len(self.doc_ids), "left_out_documents": len(self.left_out),
               "answerable": sum(q.answerable for q in self.questions)}
        for q in self.questions:
            if not q.answerable:
                kind = q.evidence.split(":", 1)[0] or "unanswerable"
                out[f"unanswerable.{kind}"] = out.get(f"unanswerable.{kind}", 0) + 1
        out["unanswerable"] = sum(not q.answerable for q in self.questions)
        return out


def question_groups(questions: Sequence[EvalQuestion], doc_of: dict[str, str]) -> list[set[str]]:
    """Sets of documents that must stay on one side: those sharing a question (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q in questions:
        docs = [doc_of.get(d, d) for d in q.doc_ids]
        for d in docs:
            find(d)
        for a, b in zip(docs, docs[1:]):
            parent[find(a)] = find(b)
    groups: dict[str, set[str]] = {}
    for d in list(parent):
        groups.setdefault(find(d), set()).add(d)
    return sorted(groups.values(), key=min)


def split_documents(groups: Sequence[set[str]], seed: int, check_share: float = CHECK_SHARE) -> tuple[set[str], set[str]]:
    """Seeded split of document groups into (tune, check), ``check_share`` of the documents to check."""
    order = list(groups)
    random.Random(seed).shuffle(order)
    total = sum(len(g) for g in order)
    tune: set[str] = set()
    check: set[str] = set()
    for g in order:
        (check if len(check) + len(g) <= check_share * total + 0.5 else tune).update(g)
    return tune, check


def organisations(text: str) -> list[str]:
    """Organisation names in ``text`` (longest match per position, leading function words cut)."""
    out = []
    for m in _ORG.finditer(text):
        name = _ORG_LEAD.sub("", m.group(0))
        if len(name) >= 4 and _NAME_START.search(name) and not _NOT_NAME.search(name) and name not in out:
            out.append(name)
    return out


def _unanswerable(qid: str, question: str, kind: str, source: str) -> EvalQuestion:
    # ``evidence`` records how the question was made ("near_miss: from q0002").
    return EvalQuestion(id=qid, question=question, answers=(), doc_ids=(), type=UNANSWERABLE, evidence=f"{kind}: {source}")


def _attribute_words(question: str, entity: str) -> set[str]:
    return bigrams(question_core(question.replace(entity, "")))


def near_miss(
    questions: Sequence[EvalQuestion], entities_of: dict[str, list[str]], docs: dict[str, Document],
    pool: Sequence[str], seed: int, limit: int,
) -> list[EvalQuestion]:
    """Questions with their entity swapped for another entity of the same kind (see the module notes).

    ``entities_of`` maps a document id to the entities it is about; ``pool`` is the
    documents (kept in the corpus, same side) whose entities may be swapped in.
    """
    rng = random.Random(seed)
    candidates = [(e, d) for d in pool for e in entities_of.get(d, [])]
    made: list[EvalQuestion] = []
    for q in rng.sample(list(questions), len(questions)):
        if len(made) >= limit or not q.answerable:
            continue
        gold = set(q.doc_ids)
        ents = [e for d in q.doc_ids for e in entities_of.get(d, []) if e in q.question]
        if not ents:
            continue
        entity = max(ents, key=len)
        kind = _kind(entity)
        same = [e for e, d in candidates if d not in gold and _kind(e) == kind and e != entity and entity not in e and e not in entity]
        rng.shuffle(same)
        for new in same[:8]:
            naming = [doc for doc in docs.values() if new in doc.text]
            if any(entity in doc.text for doc in naming):
                continue
            asked = _attribute_words(q.question, entity)
            if not asked or any(len(asked & bigrams(doc.text)) / len(asked) >= 0.5 for doc in naming):
                continue
            if any(a and a in doc.text for doc in naming for a in q.answers):
                continue
            made.append(_unanswerable(f"{q.id}-nm", q.question.replace(entity, new), "near_miss", q.id))
            break
    return made


def absent_attribute(
    entities_of: dict[str, list[str]], docs: dict[str, Document], pool: Sequence[str], seed: int, limit: int, prefix: str,
) -> list[EvalQuestion]:
    """Questions asking an entity of ``pool`` for an attribute no document naming it gives."""
    rng = random.Random(seed)
    made: list[EvalQuestion] = []
    for doc_id in rng.sample(list(pool), len(pool)):
        if len(made) >= limit:
            break
        ents = entities_of.get(doc_id, [])
        if not ents:
            continue
        entity = ents[0]
        naming = [doc.text.lower() for doc in docs.values() if entity in doc.text]
        templates = list(ATTRIBUTE_TEMPLATES)
        rng.shuffle(templates)
        for template, keywords in templates:
            if not any(k in text for text in naming for k in keywords):
                made.append(_unanswerable(f"{prefix}{len(made) + 1:03d}", template.format(e=entity), "absent_attribute", doc_id))
                break
    return made


def _kind(entity: str) -> str:
    """A cheap entity kind: the organisation suffix, else the last character (镇, 站, 大学 → 学)."""
    return next((s for s in _ORG_SUFFIXES if entity.endswith(s)), entity[-1:])


def drop_left_out(questions: Iterable[EvalQuestion], left_out: set[str]) -> list[EvalQuestion]:
    """Questions whose every gold document was left out become unanswerable (``left_out``)."""
    out = []
    for q in questions:
        if q.answerable and set(q.doc_ids) <= left_out:
            out.append(replace(q, answers=(), doc_ids=(), type=UNANSWERABLE, evidence=f"left_out: {q.doc_ids[0]}"))
        elif q.answerable:
            out.append(replace(q, doc_ids=tuple(d for d in q.doc_ids if d not in left_out)))
        else:
            out.append(q)
    return out
