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

_PRONOUN = re.compile(r"(它们|他们|她们|该组织|该机构|该协会|该基金会|该项目|该活动|这个组织|这个机构|这家机构|这个项目|它|他|她|其)")
_LEAD = re.compile(r"^(那么|那|还有|另外|以及|并且|而且|那请问|请问)[，,\s]*")
_ORG_HEAD = re.compile(r"(基金会|联合会|协会|商会|学会|中心|组织|救援队|志愿队|委员会|局|部|院|公司|集团|医院|大学|行动|项目|计划|平台|队)$")
_NOUNISH = ("n", "nz", "ns", "nr", "nt", "nrt", "j", "eng", "x")
_QUESTION_WORDS = ("多少", "什么", "哪", "谁", "几", "怎么", "如何", "为什么", "是否", "吗")


def _jieba_pos():
    import jieba
    import jieba.posseg as pseg

    jieba.setLogLevel(logging.WARNING)
    return pseg


def subject_of(question: str) -> str:
    """The entity a question is about, e.g. ``北京幸福公益基金会的理事长是谁？`` -> ``北京幸福公益基金会``."""
    words = [(w.word, w.flag) for w in _jieba_pos().cut(question)]
    text = ""
    for word, _ in words:
        text += word
        if _ORG_HEAD.search(text) and len(text) >= 3:
            return text
        if any(q in word for q in _QUESTION_WORDS) or word in "，。？！的":
            break
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
    subject = ""
    for previous in reversed(users):
        subject = subject_of(previous)
        if subject:
            break
    if not subject:
        return question
    rest = _LEAD.sub("", question)
    if _PRONOUN.search(rest):
        rewritten = _PRONOUN.sub(subject, rest, count=1)
    elif subject in rest:
        rewritten = rest
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
