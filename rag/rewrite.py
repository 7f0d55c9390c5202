"""Rewrite a follow-up question into a standalone one using the chat history.

Rule-based: the subject of the previous question (the words up to and
including an organisation-like head noun, or its leading nouns) replaces a
pronoun in the follow-up ("那它出资多少？" -> "腾讯基金会出资多少？"), or is put
in front of a follow-up that names no subject of its own. It needs no model,
is instant and predictable; see README "Measurements" for how it compares.
"""
from __future__ import annotations

import logging
import re
from typing import Sequence

logger = logging.getLogger(__name__)

_PRONOUN = re.compile(
    r"((?:该|这个|这家|这一|此)(?:组织|机构|协会|基金会|联合会|商会|中心|平台|项目|活动|行动|单位|企业|公司|医院|学会|救援队)"
    r"|它们|他们|她们|它|他|她|其)"
)
_LEAD = re.compile(r"^(那么|那|还有|另外|以及|并且|而且|那请问|请问)[，,\s]*")
_ORG_HEAD = re.compile(r"(基金会|联合会|协会|商会|学会|中心|组织|救援队|志愿队|委员会|局|部|院|公司|集团|医院|大学|行动|项目|平台|队)$")
_NOUNISH = ("n", "nz", "ns", "nr", "nt", "nrt", "j", "eng", "x")
_QUESTION_WORDS = ("多少", "什么", "哪", "谁", "几", "怎么", "如何", "为什么", "是否", "吗")


def _jieba_pos():
    import jieba
    import jieba.posseg as pseg

    jieba.setLogLevel(logging.WARNING)
    return pseg


def subject_candidates(question: str) -> list[str]:
    """Prefixes of the question that end in an organisation-like head noun, shortest first.

    Scanning stops at a preposition, pronoun or question word, or a verb after a candidate, so
    "深圳市猛犸公益基金会捐给雅典大学…" gives only "深圳市猛犸公益基金会".
    """
    text, out = "", []
    for w in _jieba_pos().cut(question):
        word, flag = w.word, w.flag
        if any(q in word for q in _QUESTION_WORDS) or word in "，。？！的" or _PRONOUN.fullmatch(word):
            break
        if text and (flag[:1] in ("p", "c", "d", "u", "r") or (out and flag[:1] == "v")):
            break  # a verb ends the subject once one is found: "…基金会捐给…"; before that it may be part of a name (组织)
        text += word
        if _ORG_HEAD.search(text) and len(text) >= 3:
            out.append(text)
    return out


def subject_of(question: str) -> str:
    """The entity a question is about, e.g. ``北京幸福公益基金会的理事长是谁？`` -> ``北京幸福公益基金会``."""
    candidates = subject_candidates(question)
    if candidates:
        return candidates[-1]
    words = [(w.word, w.flag) for w in _jieba_pos().cut(question)]
    lead = ""
    for word, flag in words:
        if flag[:2] not in _NOUNISH and flag[:1] not in ("n",):
            break
        lead += word
    return lead


def is_follow_up(question: str) -> bool:
    return bool(_PRONOUN.search(question) or _LEAD.match(question)) or len(question) <= 8


def rewrite_question(question: str, history: Sequence[tuple[str, str]] | Sequence[dict] = ()) -> str:
    """Standalone form of ``question`` given earlier ``(question, answer)`` turns.

    ``history`` items are ``(user, assistant)`` pairs or ``{"role", "content"}``
    messages (the Gradio format). Without history the question is unchanged.
    """
    users = _user_turns(history)
    if not users or not is_follow_up(question):
        return question
    rest = _LEAD.sub("", question)
    pronoun = _PRONOUN.search(rest)
    # "该协会" refers to the last earlier subject whose head is 协会.
    head = pronoun.group(0)[-2:] if pronoun and len(pronoun.group(0)) > 2 else ""
    subject = ""
    for previous in reversed(users):
        candidates = subject_candidates(previous) or [subject_of(previous)]
        typed = [c for c in candidates if head and c.endswith(head)]
        subject = (typed or candidates)[-1]
        if subject:
            break
    if not subject:
        return question
    own = subject_of(rest)
    if pronoun:
        rewritten = _PRONOUN.sub(subject, rest, count=1)
    elif subject in rest or _ORG_HEAD.search(own):
        rewritten = rest  # names its own subject: "那中国食用菌协会呢？"
    else:
        rewritten = subject + rest
    logger.info("rewrote follow-up %r -> %r", question, rewritten)
    return rewritten


def _user_turns(history) -> list[str]:
    out: list[str] = []
    for turn in history or ():
        if isinstance(turn, dict):
            if turn.get("role") == "user" and isinstance(turn.get("content"), str):
                out.append(turn["content"])
        elif isinstance(turn, (list, tuple)) and turn and isinstance(turn[0], str):
            out.append(turn[0])
    return out
