"""EPUB (ebooklib): chapters in spine order, read as HTML with their headings."""
from __future__ import annotations

from pathlib import Path

from rag.readers.base import Block, Sections
from rag.readers.web import blocks_of


def read(path: Path) -> list[Block]:
    import ebooklib
    from ebooklib import epub

    book = epub.read_epub(str(path), options={"ignore_ncx": True})
    out = Sections()
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        out.flush()
        out.headings, out._levels = [], []  # a chapter starts a new heading path
        blocks_of(item.get_content().decode("utf-8", errors="replace"), out)
    return out.done()
