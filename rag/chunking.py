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


def split_sentences(text: str, ends: re.Pattern = _SENTENCE_END) -> list[tuple[int, int]]:
    """Return ``(start, end)`` spans of sentences covering ``text`` without gaps, each ending
    where ``ends`` matches (default: this module's sentence ends).

    ``"".join(text[s:e] for s, e in spans) == text`` always holds.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in ends.finditer(text):
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
        # Start the next chunk with the last `overlap` sentences, but always move forward: past
        # the chunk's first unit with text, or a chunk opening with blank units (a line break)
        # would start where it starts and be repeated whole inside the next.
        first = next((k for k in range(i, j + 1) if text[units[k][0]:units[k][1]].strip()), j)
        nxt = max(first + 1, j + 1 - overlap_sentences)
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
    location. A table that fits ``max_chars`` is one chunk; a longer one is cut
    into groups of whole rows (see `table_pieces`). Chunk ids number the
    chunks of a document in order, so an unchanged document keeps its ids.
    """
    chunks: list[Chunk] = []
    for doc in documents:
        n = 0
        for start, end, location, header, opening_end in _pieces(doc, max_chars):
            for s, e in chunk_text(doc.text[start:end], max_chars, overlap_sentences):
                s, e = s + start, e + start
                context = doc.text[: min(context_chars, s, opening_end)].strip()
                context = f"{context}\n{header}" if context and header else context or header
                chunks.append(Chunk(id=f"{doc.id}#{n}", doc_id=doc.id, text=doc.text[s:e], start=s, end=e,
                                    title=doc.title, context=context, location=dict(location)))
                n += 1
    return chunks


def _pieces(doc: Document, max_chars: int) -> Iterator[tuple[int, int, dict, str, int]]:
    """``(start, end, location, header, opening_end)`` regions to chunk: located spans, each table's rows grouped.

    ``opening_end`` bounds the document opening used as context: a group of
    rows takes none of its own table (a cut row), only the header lines.
    """
    spans = list(doc.spans or ((0, len(doc.text), {}),))
    i = 0
    while i < len(spans):
        start, end, location = spans[i]
        if "table" not in location:
            yield start, end, location, "", end
            i += 1
            continue
        j = i + 1
        while j < len(spans) and _same_table(spans[j][2], location):
            j += 1
        for piece in table_pieces(doc.text, spans[i:j], max_chars):
            yield *piece, start if piece[3] else piece[1]
        i = j


def _table_key(location: dict) -> dict:
    return {k: v for k, v in location.items() if k not in ("row", "rows")}


def _same_table(a: dict, b: dict) -> bool:
    return "table" in a and _table_key(a) == _table_key(b)


def table_pieces(text: str, rows: list[tuple[int, int, dict]], max_chars: int) -> list[tuple[int, int, dict, str]]:
    """Group one table's row spans into pieces of whole rows within ``max_chars``.

    The first row's span starts with the table's header and ``| --- |`` lines.
    A table that fits is one piece; otherwise each later piece gets those two
    lines as its ``header`` (they become the chunk's context, counted in the
    budget) because a row without its column names means little. A piece's
    location names its first ``row`` and, when it holds more, ``rows``
    ``[first, last]``. A single row over the budget is one piece, cut later.
    """
    head = "\n".join(text[rows[0][0]:rows[0][1]].split("\n")[:2]) if rows[0][2].get("row", 1) == 1 else ""
    base = _table_key(rows[0][2])
    pieces = []
    i = 0
    while i < len(rows):
        budget = max_chars if i == 0 else max(max_chars - len(head) - 1, max_chars // 2)
        j = i
        while j + 1 < len(rows) and rows[j + 1][1] - rows[i][0] <= budget:
            j += 1
        first, last = rows[i][2].get("row", i + 1), rows[j][2].get("row", j + 1)
        location = {**base, "row": first, **({"rows": [first, last]} if last != first else {})}
        pieces.append((rows[i][0], rows[j][1], location, head if i > 0 else ""))
        i = j + 1
    return pieces
