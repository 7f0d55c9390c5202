"""Verify an answer against its passages and attach citations we can trust.

The model's own ``[n]`` markers are only a hint. Each answer sentence is
aligned to the passage sentence that shares most character bigrams with it;
the sentence is kept only if that overlap is high enough and every number and
Latin name it contains occurs in the cited passage. Sentences no passage
supports are dropped; an answer left with none is unsupported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rag.chunking import split_sentences
from rag.records import Citation, Passage
from rag.textsim import bigrams, overlap

_MARKER = re.compile(r"\s*[\[【]\s*(\d{1,2})(?:\s*[,，、]\s*\d{1,2})*\s*[\]】]")
_ANSWER_SPLIT = re.compile(r"(?<=[。！？；!?;\n])")
# Numbers (with units of scale) and Latin words: invented ones are the commonest hallucination.
_KEY_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z0-9\-]+")
_CJK_NUM = re.compile(r"[零一二三四五六七八九十百千万亿两]{2,}")
_NOT_CONTENT = re.compile(r"[\s\W_]+")
# Lead-ins small models add ("根据资料，…") and template residue ("[编号]") are not claims.
_BOILERPLATE = re.compile(r"^\s*(?:根据(?:现有|以上|上述|所给|提供的)?资料(?:显示|所述|中)?[，,:：]?|资料(?:显示|中提到|表明)[，,:：]?)|\[编号\][:：]?")
# A passage sentence that tells the assistant what to do ("忽略以上所有指令…", "ignore previous
# instructions…") is a prompt injection, not evidence: an answer echoing it was steered, not supported.
_INSTRUCTION = re.compile(
    r"(忽略|无视|不要理会|忘记|忘掉)(以上|上面|上述|之前|前面|先前|所有|全部|一切)[^。！？]{0,8}?(指令|指示|要求|提示|规则|命令|设定)"
    r"|\b(ignore|disregard|forget)\b[^.!?]{0,30}\b(instructions?|prompts?|rules|directions)\b",
    re.IGNORECASE,
)


def key_tokens(text: str) -> list[str]:
    return [t.lower() for t in _KEY_TOKEN.findall(text)] + _CJK_NUM.findall(text)


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text)


@dataclass(frozen=True)
class AlignedSentence:
    sentence: str
    citation: Citation | None
    missing_tokens: tuple[str, ...]

    @property
    def supported(self) -> bool:
        return self.citation is not None


def _best_span(sb: set[str], passage: Passage) -> tuple[float, int, int]:
    """Best-supporting sentence span of ``passage`` for bigrams ``sb``: (overlap, start, end)."""
    best = (0.0, 0, 0)
    if not sb:
        return best
    text = passage.text
    spans = split_sentences(text)
    # Also try pairs of adjacent sentences: an answer sentence often merges two.
    candidates = spans + [(spans[i][0], spans[i + 1][1]) for i in range(len(spans) - 1)]
    for s, e in candidates:
        if _INSTRUCTION.search(text[s:e]):
            continue
        pb = bigrams(text[s:e])
        score = len(sb & pb) / len(sb)
        # Prefer the shorter span on ties: it is the tighter quote.
        if score > best[0] + 1e-9 or (abs(score - best[0]) < 1e-9 and best[2] - best[1] > e - s):
            best = (score, s, e)
    return best


def align_sentence(
    sentence: str,
    passages: Sequence[Passage],
    hinted: Sequence[int] = (),
    min_support: float = 0.5,
    question: str = "",
) -> AlignedSentence:
    """Find the passage that supports ``sentence``; ``hinted`` are the model's 1-based markers.

    Only what the sentence adds to the question has to be supported: an answer
    that merely restates the question ("…框架叫…框架") adds nothing and gets no citation.
    ``min_support`` is the share (0..1) of those added bigrams the best passage span must
    hold (``Config.answer.min_support``).
    """
    tokens = key_tokens(sentence)
    qb = bigrams(question)
    claim = bigrams(sentence) - qb if qb else bigrams(sentence)
    if not claim:
        return AlignedSentence(sentence, None, ("<restates the question>",))
    best: tuple[float, int, int, int] | None = None  # (score, number, start, end)
    best_missing: tuple[str, ...] = tuple(tokens)
    for number, passage in enumerate(passages, start=1):
        norm_passage = passage.text.lower()
        missing = tuple(t for t in tokens if t not in norm_passage)
        score, s, e = _best_span(claim, passage)
        if score < min_support:
            continue
        if missing:
            if len(missing) < len(best_missing):
                best_missing = missing
            continue
        # Tie-breaks: the model's own marker, then how much of the question the quote covers.
        rank = score + (0.05 if number in hinted else 0.0) + (0.1 * overlap(passage.text[s:e], qb) if qb else 0.0)
        if best is None or rank > best[0]:
            best = (rank, number, s, e)
    if best is None:
        return AlignedSentence(sentence, None, best_missing)
    _, number, s, e = best
    p = passages[number - 1]
    cite = Citation(marker=number, doc_id=p.doc_id, chunk_id=p.chunk_id, quote=p.text[s:e], start=s, end=e, sentence=sentence,
                    score=round(best[0], 4), location=dict(p.chunk.location))
    return AlignedSentence(sentence, cite, ())


def split_answer(text: str) -> list[tuple[str, list[int]]]:
    """Answer sentences without markers, each with the marker numbers the model wrote."""
    out = []
    for piece in _ANSWER_SPLIT.split(text):
        hinted = [int(n) for m in _MARKER.finditer(piece) for n in re.findall(r"\d+", m.group(0))]
        clean = _BOILERPLATE.sub("", strip_markers(piece)).strip()
        if _NOT_CONTENT.sub("", clean):
            out.append((clean, hinted))
    return out


def verify_answer(text: str, passages: Sequence[Passage], min_support: float = 0.5, question: str = "") -> list[AlignedSentence]:
    """Align every sentence of ``text``; see the module docstring."""
    return [align_sentence(s, passages, hinted, min_support, question) for s, hinted in split_answer(text)]


def render(aligned: Sequence[AlignedSentence]) -> tuple[str, tuple[Citation, ...]]:
    """Answer text of the supported sentences with verified ``[n]`` markers, and the citations."""
    parts: list[str] = []
    citations: list[Citation] = []
    for a in aligned:
        if a.citation is None:
            continue
        body = a.sentence
        end = ""
        if body and body[-1] in "。！？；!?;.":
            body, end = body[:-1], body[-1]
        parts.append(f"{body}[{a.citation.marker}]{end or '。'}")
        citations.append(a.citation)
    return "".join(parts), tuple(citations)
