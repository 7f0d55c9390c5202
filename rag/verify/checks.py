"""Explainable signals of whether an answer answers the question.

Small local models answer every question, so refusal cannot come from the
model's goodwill. These checks are signals that ``rag.verify.answerability``
combines into one calibrated score (none refuses on its own):

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
from typing import Sequence

from rag.normalize import fold_script
from rag.records import Passage
from rag.textsim import bigrams, question_core

_NUM = r"[\d零〇一二三四五六七八九十百千万亿两]"
_MEASURES = "家名人个吨辆件次所项批份台套支条位场倍只架箱袋株户"
_YEAR_Q = re.compile(r"哪一?年|何年|什么年份")
_DATE_Q = re.compile(r"哪一?天|哪日|何时|什么时候|什么时间|哪个月|几月|几号|几日")
_COUNT_Q = re.compile(rf"(?:多少|几)([{_MEASURES}])")
_SAME_MEASURE = ("名人位户", "家所个", "件项个", "辆台架")
_NAME_Q = re.compile(r"叫什么|什么名字|名称是什么|名字是什么|称为什么|名为什么")
_NAMED = re.compile(r"“([^”]{2,})”|《([^》]{2,})》|「([^」]{2,})」|\"([^\"]{2,})\"")
_YEAR_A = re.compile(r"\d{4}\s*年|[零〇一二三四五六七八九]{4}年")
_DATE_A = re.compile(rf"{_NUM}+\s*[年月日号]|[上下]午|凌晨|晚上|当天|[春夏秋冬]季|[春夏秋冬]天|{_NUM}+\s*(?:世纪|年代)|朝|时期|时代")


# Verbs a date question asks about, grouped with the words a source may use instead.
_EVENT_SYNONYMS = (
    frozenset("成立 创立 创建 组建 建立 创办 注册 挂牌".split()),
    frozenset("举行 举办 召开 开幕 开展 进行".split()),
    frozenset("开始 启动 发起 开启 开通 上线".split()),
    frozenset("发布 印发 出台 公布 发出 下发".split()),
)


#: Phrases that mark a sentence as "the documents do not say" (one list: the pipeline's
#: explicit-refusal test and the evaluation's short answer both use it).
REFUSAL_CUES = (
    "无法回答", "无法根据", "无法确定", "无法从", "不能回答", "没有找到", "未找到", "找不到",
    "没有提到", "未提到", "没有提及", "未提及", "没有提供", "未提供", "没有相关", "没有足够",
    "资料中没有", "文档中没有", "材料中没有", "不知道",
)

_MONEY_Q = re.compile(
    r"(?:多少|几)(?:钱|元|万元|亿元|美元|资金|金额)"
    r"|(?:金额|资金|款|预算|费用|价格|经费|出资|捐赠|捐款|募集|筹集|投入|投资|销售额|营收|收入)[^，。？]{0,8}(?:多少|几)"
)
_MONEY_A = re.compile(
    rf"{_NUM}+(?:[.,]\d+)?\s*[多余]?[万亿千百]?[多余]?\s*(?:元|美元|欧元|英镑|日元|港元|港币|块|镑|円|圆)"
    rf"|{_NUM}+(?:[.,]\d+)?\s*[多余]?[万亿]"
)
_QUANTITY_Q = re.compile(r"多少|几[^乎]|多大|多长|多高|多远|多重|多久|第几|百分之|比例|比率")
_NUMBER_A = re.compile(rf"{_NUM}|[半几数]")
_PERSON_Q = re.compile(r"谁|哪位|何人|什么人|哪个人|哪些人")
_PLACE_Q = re.compile(r"哪里|哪儿|何处|何地|什么地方|哪个(?:国家|城市|省|地区|地方)|哪座|哪国|哪省|哪市|籍贯|位于哪|在哪")
_PLACE_A = re.compile(r"[省市县区镇乡村州国洲山河湖岛港湾街路道洋海岸部]")

#: Answer types a question can ask for; ``expected_type`` returns one of them or "".
ANSWER_TYPES = ("year", "date", "count", "money", "quantity", "name", "person", "place")
#: The types whose absence refuses an answer outright (rag.verify); the others are soft signals,
#: since a name or a place is not reliably recognised by its form.
NUMERIC_TYPES = ("year", "date", "count", "money", "quantity")


# The question patterns of each type, in the order they are tried (a year question also
# matches the quantity pattern); and the answer pattern of the types one regex settles.
_ASKS = (("year", _YEAR_Q), ("date", _DATE_Q), ("count", _COUNT_Q), ("money", _MONEY_Q), ("name", _NAME_Q),
         ("person", _PERSON_Q), ("place", _PLACE_Q), ("quantity", _QUANTITY_Q))
_ANSWERS = {"year": _YEAR_A, "date": _DATE_A, "money": _MONEY_A, "quantity": _NUMBER_A}


def expected_type(question: str) -> str:
    """The kind of answer ``question`` asks for (see ANSWER_TYPES), or "" when it does not say."""
    question = fold_script(question)  # the patterns are written in simplified characters
    return next((kind for kind, pattern in _ASKS if pattern.search(question)), "")


def answer_has_expected_type(question: str, answer: str) -> bool:
    """False when ``answer`` lacks what the question asks for: a year, a date, a count with
    its measure word, an amount of money, a number, a name that is not the question read
    back, a person or a place. True when the question asks for nothing checkable."""
    question, answer = fold_script(question), fold_script(answer)
    kind = expected_type(question)
    if kind in _ANSWERS:
        return bool(_ANSWERS[kind].search(answer))
    if kind == "count":
        measure = _COUNT_Q.search(question).group(1)
        # Measure words that count the same things ("多少名用户" is answered by "3万人").
        measures = next((group for group in _SAME_MEASURE if measure in group), measure)
        return bool(re.search(rf"{_NUM}+[多余]?[万亿千百]?[多余]?\s*[{measures}]", answer))
    if kind == "name":
        # A quoted or bracketed name must not be the question's own words read back.
        qb = bigrams(question)
        names = ["".join(g) for g in _NAMED.findall(answer)]
        return not names or any(len(bigrams(n) - qb) > len(bigrams(n)) / 2 for n in names)
    if kind in ("person", "place"):
        new = "".join(ch for ch in answer if ch not in question)  # what the answer adds to the question
        if kind == "place":
            return bool(_PLACE_A.search(new)) or _has_tag(new, ("ns",))
        return bool(re.search(r"[A-Za-z]|·", new)) or _has_tag(new, ("nr", "nt", "nrt", "nrfg"))
    return True


def _has_tag(text: str, tags: tuple[str, ...]) -> bool:
    """Whether jieba's tagger gives some word of ``text`` one of ``tags``."""
    if not text.strip():
        return False
    import jieba.posseg  # jieba is already the BM25 tokenizer

    return any(w.flag in tags for w in jieba.posseg.lcut(text))


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
    needle = re.sub(r"\s+", "", fold_script(subject)).lower()
    return any(needle in re.sub(r"\s+", "", fold_script(p.chunk.with_context)).lower() for p in passages)


def asked_event(question: str) -> str:
    """The verb a year/date question asks about ("成立" in "是哪一年成立的"), or ""."""
    question = fold_script(question)
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
    sentences = [fold_script(s) for s in sentences]
    return any(w in s for s in sentences for w in words) or any(ch in s for s in sentences for ch in event)
