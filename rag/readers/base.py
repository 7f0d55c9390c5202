"""What every reader returns, and helpers shared by the structured formats."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import CorpusError

logger = logging.getLogger(__name__)


@dataclass
class Block:
    """A run of text from one place in a file.

    ``location`` keys: ``page`` (1-based PDF page), ``section`` (list of
    headings, outermost first), ``table`` and ``row`` (1-based, per file).
    """

    text: str
    location: dict = field(default_factory=dict)


def check_size(path: Path, max_bytes: int) -> None:
    """A CorpusError when ``path`` cannot be read or is over ``max_bytes``."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e}") from e
    if size > max_bytes:
        raise CorpusError(f"{path} is {size:,} bytes, over the {max_bytes:,}-byte limit; split it into smaller files")


def read_text_file(path: Path, max_bytes: int = 50_000_000) -> str:
    """Read a text file as UTF-8, falling back to GB18030 (common for Chinese text)."""
    check_size(path, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e}") from e
    if b"\x00" in data[:8192]:
        raise CorpusError(f"{path} looks like a binary file, not text; give .txt, .md, .jsonl or .csv files")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "utf-8-sig":
            logger.info("%s is not UTF-8; decoded as %s", path, encoding)
        return text
    raise CorpusError(f"{path} is neither UTF-8 nor GB18030 text; re-save it as UTF-8")


def section_location(headings: list[str]) -> dict:
    return {"section": list(headings)} if headings else {}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table_blocks(rows: list[list[str]], table_no: int, headings: list[str]) -> list[Block]:
    """A table as Markdown rows, one block per data row (the header goes with row 1).

    A block per row lets the chunker cut a long table between rows only: it
    keeps a table that fits one chunk whole, and groups a longer one's rows,
    giving each later group the header lines as context (`rag.chunking.table_pieces`).
    """
    rows = [[_cell(c) for c in row] for row in rows if any(c.strip() for c in row)]
    if not rows:
        return []
    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
    head = lines[0] + "\n|" + " --- |" * width
    base = {**section_location(headings), "table": table_no}
    if len(lines) == 1:
        return [Block(head, {**base, "row": 1})]
    out = [Block(f"{head}\n{lines[1]}", {**base, "row": 1})]
    out.extend(Block(line, {**base, "row": n}) for n, line in enumerate(lines[2:], start=2))
    return out


class Sections:
    """Collects paragraphs under the current heading path into blocks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.headings: list[str] = []
        self._levels: list[int] = []
        self._paras: list[str] = []
        self.tables = 0

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self.flush()
        while self._levels and self._levels[-1] >= level:
            self._levels.pop()
            self.headings.pop()
        self._levels.append(level)
        self.headings.append(text)
        self._paras.append(text)

    def paragraph(self, text: str) -> None:
        text = text.strip()
        if text:
            self._paras.append(text)

    def table(self, rows: list[list[str]]) -> None:
        self.flush()
        self.tables += 1
        self.blocks.extend(table_blocks(rows, self.tables, self.headings))

    def flush(self) -> None:
        if self._paras:
            self.blocks.append(Block("\n".join(self._paras), section_location(self.headings)))
            self._paras = []

    def done(self) -> list[Block]:
        self.flush()
        return self.blocks
