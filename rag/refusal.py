"""Evidence checks that decide when to refuse instead of answering.

Small local models answer every question, so refusal cannot come from the
model's goodwill. Four checks, each cheap and explainable:

- *evidence*: the best passage must cover enough of the question's bigrams;
- *subject*: the entity the question is about must occur in a cited passage
  (its article opening included): "北京烹饪协会的会长是谁" is not answered from
  a passage about 中国烹饪协会;
- *answer type*: a question asking "哪一年", "哪天", "多少名" or "叫什么名字"
  must get an answer holding a year, a date, a count with that measure word,
  or, when it quotes a name, one that is not the question read back;
- *event*: a question asking when something happened ("哪一年成立的",
  "哪天举行的") must cite a sentence that mentions that event (the verb, a
  near synonym or one of its characters): a date next to the right name is not
  enough when the sentence tells of something else (a mudslide in 2012 does
  not date a founding).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rag.records import Passage
from rag.textsim import bigrams, question_core

_NUM = r"[\d零〇一二三四五六七八九十百千万亿两]"
_MEASURES = "家名人个吨辆件次所项批份台套支条位场倍只架箱袋株户"
_YEAR_Q = re.compile(r"哪一?年|何年|什么年份")
_DATE_Q = re.compile(r"哪一?天|哪日|何时|什么时候|什么时间|哪个月|几月|几号|几日")
_COUNT_Q = re.compile(rf"(?:多少|几)([{_MEASURES}])")
_NAME_Q = re.compile(r"叫什么|什么名字|名称是什么|名字是什么|称为什么|名为什么")
_NAMED = re.compile(r"“([^”]{2,})”|《([^》]{2,})》|「([^」]{2,})」|\"([^\"]{2,})\"")
_YEAR_A = re.compile(r"\d{4}\s*年|[零〇一二三四五六七八九]{4}年")
_DATE_A = re.compile(rf"{_NUM}+\s*[年月日号]|[上下]午|凌晨|晚上|当天")


# Verbs a date question asks about, grouped with the words a source may use instead.
_EVENT_SYNONYMS = (
    frozenset("成立 创立 创建 组建 建立 创办 注册 挂牌".split()),
    frozenset("举行 举办 召开 开幕 开展 进行".split()),
    frozenset("开始 启动 发起 开启 开通 上线".split()),
    frozenset("发布 印发 出台 公布 发出 下发".split()),
)


@dataclass(frozen=True)
class RefusalPolicy:
    """Thresholds calibrated on the dev set (README, "Measurements")."""

    min_evidence: float = 0.5  # share of question bigrams found in the best passage
    min_support: float = 0.5  # share of an answer sentence's bigrams found in its passage
    min_grounding: float = 0.5  # share of question bigrams found in the cited passages
    check_subject: bool = False  # measured: too many false refusals (subject phrasing varies)
    check_answer_type: bool = True
    check_event: bool = True  # a date question's verb must be in a cited sentence
    rescue_explicit_refusals: bool = True  # retry extractively when the model says it cannot answer


def evidence(question: str, passages: Sequence[Passage]) -> float:
    """How much of the question the best passage (with its context) covers, 0..1."""
    core = bigrams(question_core(question))
    if not core or not passages:
        return 0.0
    return max(len(core & bigrams(p.chunk.with_context)) / len(core) for p in passages)


def grounding(question: str, cited: Sequence[Passage]) -> float:
    """Share of the question's bigrams found in the cited passages together."""
    core = bigrams(question_core(question))
    seen: set[str] = set()
    for p in cited:
        seen |= bigrams(p.chunk.with_context)
    return len(core & seen) / len(core) if core else 0.0


def subject_found(subject: str, passages: Sequence[Passage]) -> bool:
    """Whether the question's subject occurs in one of ``passages`` (exact, spaces ignored)."""
    if not subject:
        return True
    needle = re.sub(r"\s+", "", subject).lower()
    return any(needle in re.sub(r"\s+", "", p.chunk.with_context).lower() for p in passages)


def answer_has_expected_type(question: str, answer: str) -> bool:
    """False when the question asks for a year, date or count that ``answer`` lacks."""
    if _YEAR_Q.search(question):
        return bool(_YEAR_A.search(answer))
    if _DATE_Q.search(question):
        return bool(_DATE_A.search(answer))
    m = _COUNT_Q.search(question)
    if m:
        return bool(re.search(rf"{_NUM}+[多余]?[万亿千百]?[多余]?\s*{m.group(1)}", answer))
    if _NAME_Q.search(question):
        # A quoted or bracketed name must not be the question's own words read back.
        qb = bigrams(question)
        names = ["".join(g) for g in _NAMED.findall(answer)]
        return not names or any(len(bigrams(n) - qb) > len(bigrams(n)) / 2 for n in names)
    return True


def asked_event(question: str) -> str:
    """The verb a year/date question asks about ("成立" in "是哪一年成立的"), or ""."""
    m = _YEAR_Q.search(question) or _DATE_Q.search(question)
    if not m:
        return ""
    import jieba.posseg  # jieba is already the BM25 tokenizer; its tagger finds the verb

    words, at, start = [], None, 0
    for w in jieba.posseg.lcut(question):
        if at is None and start + len(w.word) > m.start():
            at = len(words)
        words.append(w)
        start += len(w.word)
    if at is None:
        return ""

    def verbs(ws):
        return [w.word for w in ws if w.flag.startswith("v") and len(w.word) >= 2]  # not 是, 在, 于 …

    after, before = verbs(words[at + 1 : at + 4]), verbs(words[max(0, at - 3) : at])
    return after[0] if after else (before[-1] if before else "")


def event_mentioned(question: str, sentences: Sequence[str]) -> bool:
    """False when a date question's event is in none of ``sentences`` (see the module notes)."""
    event = asked_event(question)
    if not event:
        return True
    words = next((group for group in _EVENT_SYNONYMS if event in group), frozenset((event,)))
    return any(w in s for s in sentences for w in words) or any(ch in s for s in sentences for ch in event)
