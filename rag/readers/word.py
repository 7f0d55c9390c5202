"""Word ``.docx`` (python-docx): headings, paragraphs and tables in document order."""
from __future__ import annotations

import re
from pathlib import Path

from rag.readers.base import Block, Sections

_LEVEL = re.compile(r"(?:heading|标题)\s*(\d)", re.IGNORECASE)


def _heading_level(paragraph) -> int:
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name.lower() == "title":
        return 1
    m = _LEVEL.search(name)
    return int(m.group(1)) if m else 0


def read(path: Path) -> list[Block]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    out = Sections()
    for item in document.iter_inner_content():  # paragraphs and tables, in body order
        if isinstance(item, Paragraph):
            level = _heading_level(item)
            if level:
                out.heading(level, item.text)
            else:
                out.paragraph(item.text)
        elif isinstance(item, Table):
            out.table([[cell.text for cell in row.cells] for row in item.rows])
    return out.done()
