"""Sentence-aware chunking for Chinese text.

Sentences end at 。！？；… (and their ASCII forms) or a line break; closing quotes
and brackets stay with their sentence. Sentences are packed into chunks up to a
character budget with ``overlap_sentences`` sentences carried into the next
chunk. A sentence is only cut when it alone exceeds the budget.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from rag.records import Chunk, Document

# End punctuation, plus any closing quotes/brackets that follow it.
_SENTENCE_END = re.compile(r"(?:[。！？；!?;]+|…+|\.{3,}|\n+)[”’」』）)\]]*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return ``(start, end)`` spans of sentences covering ``text`` without gaps.

    ``"".join(text[s:e] for s, e in spans) == text`` always holds.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end > start:
            spans.append((start, end))
            start = end
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _cut_long(text: str, start: int, end: int, budget: int) -> Iterator[tuple[int, int]]:
    # A single sentence over budget: cut at commas when possible, else hard cut.
    while end - start > budget:
        window_end = start + budget
        cut = max((m.end() for m in re.finditer(r"[，、,：:]", text[start:window_end])), default=0)
        cut = start + cut if cut > budget // 3 else window_end
        yield start, cut
        start = cut
    if end > start:
        yield start, end


def sentence_units(text: str, budget: int) -> list[tuple[int, int]]:
    """Sentence spans, with sentences longer than ``budget`` cut into pieces."""
    units: list[tuple[int, int]] = []
    for s, e in split_sentences(text):
        units.extend(_cut_long(text, s, e, budget))
    return units


def chunk_text(text: str, max_chars: int = 200, overlap_sentences: int = 1) -> list[tuple[int, int]]:
    """Pack sentence units into ``(start, end)`` chunk spans of at most ``max_chars``."""
    if max_chars < 10:
        raise ValueError("max_chars must be at least 10")
    units = sentence_units(text, max_chars)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1][1] - units[i][0] <= max_chars:
            j += 1
        spans.append((units[i][0], units[j][1]))
        if j + 1 >= len(units):
            break
        # Start the next chunk with the last `overlap` sentences, but always move forward.
        nxt = max(i + 1, j + 1 - overlap_sentences)
        while nxt <= j and units[j + 1][1] - units[nxt][0] > max_chars:
            nxt += 1
        i = nxt
    return _strip_spans(text, spans)


def _strip_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def chunk_documents(
    documents: Iterable[Document], max_chars: int = 200, overlap_sentences: int = 1, context_chars: int = 80
) -> list[Chunk]:
    """Split documents into chunks; ``doc.text[chunk.start:chunk.end] == chunk.text``.

    Each chunk carries as ``context`` the document's first ``context_chars``
    characters that it does not itself contain: news articles name their
    subject at the start, and later chunks rarely repeat it. A document read
    into located spans (pages, sections, table rows) is chunked span by span,
    so no chunk crosses a page or section and each carries its span's
    location; a table row also gets its table's header line as context.
    """
    chunks: list[Chunk] = []
    for doc in documents:
        spans = doc.spans or ((0, len(doc.text), {}),)
        headers: dict[object, str] = {}
        n = 0
        for span_start, span_end, location in spans:
            extra = ""
            if "table" in location:
                header = headers.setdefault(location["table"], doc.text[span_start:span_end].split("\n", 1)[0])
                extra = header if location.get("row", 1) > 1 else ""
            for s, e in chunk_text(doc.text[span_start:span_end], max_chars, overlap_sentences):
                s, e = s + span_start, e + span_start
                context = doc.text[: min(context_chars, s)].strip()
                context = f"{context}\n{extra}" if context and extra else context or extra
                chunks.append(Chunk(id=f"{doc.id}#{n}", doc_id=doc.id, text=doc.text[s:e], start=s, end=e,
                                    title=doc.title, context=context, location=dict(location)))
                n += 1
    return chunks
