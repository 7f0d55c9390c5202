"""Typed records passed between pipeline stages.

Data flows one way: Document -> Chunk -> (embedding, index) -> Passage -> Answer.
All records are frozen so a stage cannot change what an earlier stage produced.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One deduplicated source document.

    Attributes:
        id: stable id, e.g. ``doc-001`` for the default corpus.
        text: normalised text; chunk offsets index into it.
        title: short display title.
        source: file the document came from.
        aliases: ids of exact duplicates that were folded into this document.
        spans: ``(start, end, location)`` regions of ``text`` that a reader
            located (a PDF page, a heading's section, a table row); chunks never
            cross a span boundary and carry its location. Empty for plain text.
    """

    id: str
    text: str
    title: str
    source: str = ""
    aliases: tuple[str, ...] = ()
    spans: tuple[tuple[int, int, dict], ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class Chunk:
    """A span of a document: ``document.text[start:end] == text``.

    ``context`` is the opening of the document for chunks that do not include
    it. Retrieval matches questions against it with the chunk (a chunk deep in
    an article rarely repeats the article's subject), but it is never quoted as
    the chunk's text.

    ``location`` says where in the source file the chunk lies: ``page``
    (1-based, PDF), ``section`` (heading path, a list of headings), ``table``
    and ``row`` (1-based; a chunk of several rows names its first, and
    ``rows`` ``[first, last]``); empty when the reader knows nothing finer than the file.
    """

    id: str
    doc_id: str
    text: str
    start: int
    end: int
    title: str = ""
    context: str = ""
    location: dict = field(default_factory=dict, hash=False)

    @property
    def with_context(self) -> str:
        """The chunk preceded by its document context."""
        return f"{self.context}\n{self.text}" if self.context else self.text


def describe_location(location: dict) -> str:
    """Short Chinese label of a location: ``第2页 · 一、概况 › 二、预算安排 · 表1 第3行``,
    ``第4张幻灯片``, ``工作表“预算” · 表2 第5行``."""
    parts = []
    if location.get("page"):
        parts.append(f"第{location['page']}页")
    if location.get("slide"):
        parts.append(f"第{location['slide']}张幻灯片")
    if location.get("sheet"):
        parts.append(f"工作表“{location['sheet']}”")
    if location.get("section"):
        parts.append(" › ".join(location["section"]))
    if location.get("table"):
        rows = location.get("rows")
        row = f" 第{rows[0]}–{rows[-1]}行" if rows else f" 第{location['row']}行" if location.get("row") else ""
        parts.append(f"表{location['table']}{row}")
    return " · ".join(parts)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its scores.

    ``score`` is the fused score used for ranking; ``dense_score`` is the cosine
    similarity and ``lexical_score`` the BM25 score (None when the chunk was not
    a candidate of that retriever).
    """

    chunk: Chunk
    score: float
    dense_score: float | None = None
    lexical_score: float | None = None

    @property
    def doc_id(self) -> str:
        return self.chunk.doc_id

    @property
    def chunk_id(self) -> str:
        return self.chunk.id

    @property
    def text(self) -> str:
        return self.chunk.text

    @property
    def title(self) -> str:
        return self.chunk.title

    @property
    def location(self) -> dict:
        return self.chunk.location


@dataclass(frozen=True)
class Citation:
    """A verified link from one answer sentence to the passage supporting it.

    ``marker`` is the 1-based passage number shown as ``[marker]``;
    ``passage.text[start:end] == quote``.
    """

    marker: int
    doc_id: str
    chunk_id: str
    quote: str
    start: int
    end: int
    sentence: str = ""
    score: float = 0.0
    #: The cited chunk's location (see `Chunk.location`).
    location: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Answer:
    """The product's reply to one question."""

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    passages: tuple[Passage, ...] = ()
    refused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    standalone_question: str = ""
    backend: str = ""
    notice: str = ""
    #: The generator's text before verification ("" when no generation ran).
    raw: str = ""
    #: The answer check's calibrated P(right) of ``candidate`` (0 when there was none).
    score: float = 0.0
    #: The verified answer before the answer check's threshold ("" when none could be verified).
    candidate: str = ""
    #: Why the answer was refused ("" when answered): no_evidence, unsupported, off_question, type or score.
    refusal_reason: str = ""
    #: The answer check's signals (rag.verify.answerability.FEATURES).
    signals: dict[str, float] = field(default_factory=dict)
    #: Tokens the generator read and wrote: ``prompt_tokens`` and ``completion_tokens``
    #: (empty when no model ran: a refusal before generation, or the extractive backend).
    usage: dict[str, int] = field(default_factory=dict)
