"""Markdown: one block per heading's section, the heading line kept with its text."""
from __future__ import annotations

import re
from pathlib import Path

from rag.readers.base import Block, read_text_file, section_location

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def read(path: Path) -> list[Block]:
    return blocks_of(read_text_file(path))


def blocks_of(text: str) -> list[Block]:
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            blocks.append(Block(body, section_location([h for _, h in headings])))
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, m.group(2).strip()))
        lines.append(line)
    flush()
    return blocks
