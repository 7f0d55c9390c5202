"""Read document files into deduplicated, normalised `Document` records.

Formats:
- line-per-article ``.txt`` whose first line is the header ``正文 内容`` (the default
  corpus): ids ``doc-NNN`` by position after the header, stray header lines skipped;
- other ``.txt``: one document per file;
- ``.md``, ``.pdf``, ``.docx``, ``.html``/``.htm``, ``.epub``: one document per
  file, read by `rag.readers` into located blocks (page, heading path, table row);
- ``.jsonl``: one object per line with ``text`` and optional ``id`` / ``title``;
- ``.csv``: one row per document, a text column (default ``text``), optional ``id``/``title``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from rag.errors import CorpusError
from rag.normalize import normalize_text
from rag.readers import READERS, Block, read_blocks
from rag.readers.base import check_size, read_text_file  # read_text_file also re-exported: callers read text files through corpus
from rag.records import Document

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv", *READERS)
HEADER = "正文内容"
MIN_CHARS = 8  # shorter lines are headers, stray numbers or other junk
TITLE_MAX = 24
_TITLE_STOP = re.compile(r"[，。！？；：,.!?;:\n]")


@dataclass
class RawDoc:
    id: str
    text: str
    source: str
    title: str = ""
    #: Located blocks from a structured reader; ``text`` is then their plain join.
    blocks: list[Block] = field(default_factory=list)


@dataclass
class CorpusStats:
    read: int = 0
    skipped: int = 0
    duplicates: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1


_DATELINE = re.compile(r"^(\d{4}年)?\d{1,2}月\d{1,2}日|消息$|记者|电$|讯$|^近日$|^日前$")


def make_title(text: str) -> str:
    """Short display title from the opening clause.

    Datelines ("5月6日", "央视网消息") and very short clauses are skipped because
    they tell the reader nothing about the article.
    """
    clauses = [c.strip().lstrip("—-·记 ") for c in _TITLE_STOP.split(text.strip()[:300])]
    head = next((c for c in clauses if len(c) >= 5 and not _DATELINE.search(c)), "") or text.strip()
    return head[:TITLE_MAX] + ("…" if len(head) > TITLE_MAX else "")


def _is_header(line: str) -> bool:
    return re.sub(r"\s+", "", line) == HEADER


def _line_corpus(path: Path, text: str, stats: CorpusStats) -> Iterator[RawDoc]:
    lines = text.split("\n")
    for position, line in enumerate(lines[1:], start=1):
        if not line.strip():
            if position < len(lines) - 1:
                stats.skip("empty line")
            continue
        if _is_header(line):
            stats.skip("repeated header line")
            continue
        yield RawDoc(id=f"doc-{position:03d}", text=line, source=str(path))


def _jsonl(path: Path, text: str, stats: CorpusStats) -> Iterator[RawDoc]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}, line {lineno}: not valid JSON ({e.msg}); fix or remove that line") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise CorpusError(f'{path}, line {lineno}: expected an object with a "text" string field')
        doc_id = str(obj.get("id") or f"{path.stem}-{lineno}")
        yield RawDoc(id=doc_id, text=obj["text"], source=str(path), title=str(obj.get("title") or ""))


def _csv(path: Path, text: str, column: str, stats: CorpusStats) -> Iterator[RawDoc]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or column not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise CorpusError(f"{path}: no {column!r} column (columns found: {found}); rename the text column or set corpus.csv_text_column")
    for rowno, row in enumerate(reader, start=2):
        doc_id = str(row.get("id") or f"{path.stem}-{rowno - 1}")
        yield RawDoc(id=doc_id, text=row.get(column) or "", source=str(path), title=str(row.get("title") or ""))


def read_raw(path: Path, csv_text_column: str = "text", max_bytes: int = 50_000_000, stats: CorpusStats | None = None) -> list[RawDoc]:
    """Read one file into raw (unnormalised) documents."""
    stats = stats if stats is not None else CorpusStats()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CorpusError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix in READERS:
        return [_structured(path, max_bytes)]
    text = read_text_file(path, max_bytes)
    if suffix == ".jsonl":
        return list(_jsonl(path, text, stats))
    if suffix == ".csv":
        return list(_csv(path, text, csv_text_column, stats))
    first_line = text.split("\n", 1)[0]
    if suffix == ".txt" and _is_header(first_line):
        return list(_line_corpus(path, text, stats))
    return [RawDoc(id=path.stem, text=text, source=str(path))]


def _structured(path: Path, max_bytes: int) -> RawDoc:
    check_size(path, max_bytes)
    blocks = read_blocks(path)
    title = next((b.location["section"][0] for b in blocks if b.location.get("section")), "")
    return RawDoc(id=path.stem, text="\n\n".join(b.text for b in blocks), source=str(path), title=title, blocks=blocks)


def assemble(blocks: Iterable[Block]) -> tuple[str, tuple[tuple[int, int, dict], ...]]:
    """Normalise blocks and join them into one text with each block's ``(start, end, location)``.

    Rows of one table are joined by a line break (the text reads as one
    Markdown table), other blocks by a blank line.
    """
    parts: list[str] = []
    spans: list[tuple[int, int, dict]] = []
    pos = 0
    previous: dict | None = None
    for block in blocks:
        text = normalize_text(block.text)
        if not text:
            continue
        if parts:
            same_table = "table" in block.location and previous is not None and previous.get("table") == block.location["table"]
            sep = "\n" if same_table else "\n\n"
            parts.append(sep)
            pos += len(sep)
        parts.append(text)
        spans.append((pos, pos + len(text), dict(block.location)))
        pos += len(text)
        previous = block.location
    return "".join(parts), tuple(spans)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly plus supported files found under named folders, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise CorpusError(f"{p} does not exist; check the path")
    return out


def load_documents(paths: Iterable[str | Path], csv_text_column: str = "text", max_bytes: int = 50_000_000,
                   reserved_ids: Iterable[str] = ()) -> list[Document]:
    """Read, normalise and deduplicate documents from files and folders.

    Exact duplicates (after normalisation) keep the first id; the other ids are
    kept as ``aliases`` so a citation or gold label naming any copy resolves.
    An id in ``reserved_ids`` (another index's documents) is qualified with its
    file name, as a repeated id is.
    """
    stats = CorpusStats()
    files = expand_paths(paths)
    if not files:
        raise CorpusError("no document files given; pass .txt, .md, .jsonl or .csv files or a folder holding them")
    def items():
        for path in files:
            for raw in read_raw(path, csv_text_column, max_bytes, stats):
                stats.read += 1
                title = normalize_text(raw.title) if raw.title else ""
                if raw.blocks:
                    text, spans = assemble(raw.blocks)
                    yield path, raw.id, text, title, raw.source, spans
                else:
                    yield path, raw.id, normalize_text(raw.text), title, raw.source

    documents = fold_documents(items(), stats, reserved_ids)
    if stats.skipped:
        logger.info("skipped %d lines/records: %s", stats.skipped, stats.skipped_reasons)
    logger.info("read %d documents from %d files: %d distinct, %d duplicates folded", stats.read, len(files), len(documents), stats.duplicates)
    return documents


def fold_documents(items: Iterable[tuple], stats: CorpusStats | None = None,
                   reserved_ids: Iterable[str] = ()) -> list[Document]:
    """Deduplicate ``(path, id, normalised text, title, source[, spans])`` records in order.

    Too-short texts are skipped; an id seen before is qualified with its file
    name; exact duplicate texts keep the first id and record the others as
    aliases. Shared by the single-process and the Ray builds.
    """
    stats = stats if stats is not None else CorpusStats()
    by_hash: dict[str, int] = {}
    docs: list[dict] = []
    seen_ids: set[str] = set(reserved_ids)
    for path, raw_id, text, title, source, *located in items:
        if len(text) < MIN_CHARS:
            stats.skip("empty or too short")
            continue
        doc_id = raw_id
        if doc_id in seen_ids:  # the same id from two files: qualify with the file name
            doc_id = f"{path.stem}/{doc_id}"
        if doc_id in seen_ids:
            raise CorpusError(f"{path}: document id {raw_id!r} appears twice; ids must be unique")
        seen_ids.add(doc_id)
        key = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if key in by_hash:
            docs[by_hash[key]]["aliases"].append(doc_id)
            stats.duplicates += 1
            continue
        by_hash[key] = len(docs)
        docs.append({"id": doc_id, "text": text, "title": title or make_title(text), "source": source, "aliases": [],
                     "spans": located[0] if located else ()})
    if not docs:
        raise CorpusError("the given files hold no usable text (all empty, junk or too short)")
    return [Document(id=d["id"], text=d["text"], title=d["title"], source=d["source"], aliases=tuple(d["aliases"]),
                     spans=d["spans"]) for d in docs]


def alias_map(documents: Iterable[Document]) -> dict[str, str]:
    """Map every id and alias to its canonical document id."""
    out: dict[str, str] = {}
    for doc in documents:
        out[doc.id] = doc.id
        for alias in doc.aliases:
            out[alias] = doc.id
    return out


def corpus_hash(documents: Iterable[Document]) -> str:
    """Content hash of a document set (ids, aliases and text), for the manifest."""
    h = hashlib.sha256()
    for doc in documents:
        record = [doc.id, list(doc.aliases), doc.title, doc.text]
        if doc.spans:  # only located documents: plain-text corpora keep the hash older builds recorded
            record.append([list(span) for span in doc.spans])
        h.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()
