"""Character-bigram similarity, the lexical signal shared by retrieval and citation checks.

Chinese has no spaces, and word segmenters disagree with each other, so
character bigrams are the robust unit for "does this text say the same thing".
"""
from __future__ import annotations

import re

from rag.normalize import fold_script

_NOT_CONTENT = re.compile(r"[\s\W_]+")
# Interrogatives and fillers carry no content to match against a passage.
# Where a question's phrases end, besides its interrogatives: "的" and the "how long/big…" words.
_PHRASE_CUTS = re.compile(r"的|有?多[长大高远久重]")
_QUESTION_WORDS = re.compile(r"(多少|什么|哪些|哪一|哪个|哪里|哪天|哪家|哪|谁|几|怎么|如何|为什么|为何|是否|吗|呢|请问|是)")


def content(text: str) -> str:
    """``text`` lower-cased, in simplified characters (:func:`rag.normalize.fold_script`), without
    punctuation or spaces: a traditional and a simplified text compare alike."""
    return _NOT_CONTENT.sub("", fold_script(text).lower())


def bigrams(text: str) -> set[str]:
    """Character bigrams of ``text`` without punctuation or spaces, lower-cased."""
    t = content(text)
    return {t[i : i + 2] for i in range(len(t) - 1)} or ({t} if t else set())


def coverage(core: set[str], text: str) -> float:
    """Share of the bigrams ``core`` found in ``text``: ``len(core & bigrams(text)) / len(core)``,
    by substring search (no bigram set of ``text`` is built)."""
    if not core:
        return 0.0
    t = content(text)
    if len(t) < 2 or min(map(len, core)) < 2:  # a one-character text or core is its own "bigram"
        return len(core & bigrams(t)) / len(core)
    return sum(map(t.__contains__, core)) / len(core)


def overlap(part: str, whole_bigrams: set[str]) -> float:
    """Share of ``part``'s bigrams found in ``whole_bigrams`` (0 when ``part`` is empty)."""
    b = bigrams(part)
    return len(b & whole_bigrams) / len(b) if b else 0.0


def phrase_bigrams(text: str, leave_out: str = "") -> set[str]:
    """Bigrams inside the phrases of a question: ``text`` cut at interrogatives, at "的" and at
    ``leave_out`` (the question's subject, say), so that no bigram spans a cut ("张三是哪里人"
    gives 张三 and no "三人"; without 张三, nothing)."""
    text, leave_out = fold_script(text), fold_script(leave_out)
    if leave_out:
        text = text.replace(leave_out, "|")
    found: set[str] = set()
    for piece in _PHRASE_CUTS.sub("|", _QUESTION_WORDS.sub("|", text)).split("|"):
        t = content(piece)
        found.update(t[i : i + 2] for i in range(len(t) - 1))
    return found


def question_core(question: str) -> str:
    """The question without interrogative words (in simplified characters), for coverage checks."""
    return _QUESTION_WORDS.sub("", fold_script(question))
