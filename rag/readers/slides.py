"""PowerPoint ``.pptx`` (python-pptx): one block per slide, its title first, then its text and tables.

Shapes are read top to bottom, then left to right, as a reader scans a slide; text
inside groups is included. Each block's location is ``{"slide": n}`` (1-based), a
table's rows add ``table`` and ``row``; the speaker notes, where a slide has them,
follow its text.
"""
from __future__ import annotations

from pathlib import Path

from rag.readers.base import Block, table_blocks


def _shapes(shapes) -> list:
    """Shapes in reading order, groups opened."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    out = []
    for shape in sorted(shapes, key=lambda s: ((s.top or 0), (s.left or 0))):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            out.extend(_shapes(shape.shapes))
        else:
            out.append(shape)
    return out


def _text(shape) -> str:
    return "\n".join(p.strip() for p in shape.text_frame.text.splitlines() if p.strip())


def read(path: Path) -> list[Block]:
    from pptx import Presentation

    blocks: list[Block] = []
    tables = 0
    for number, slide in enumerate(Presentation(str(path)).slides, start=1):
        where = {"slide": number}
        title = slide.shapes.title
        lines = [_text(title)] if title is not None and title.has_text_frame and _text(title) else []
        pending: list[Block] = []
        for shape in _shapes(slide.shapes):
            if title is not None and shape.shape_id == title.shape_id:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                tables += 1
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                pending.extend(Block(b.text, {**where, **b.location}) for b in table_blocks(rows, tables, []))
            elif shape.has_text_frame and _text(shape):
                lines.append(_text(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(notes)
        if lines:
            blocks.append(Block("\n".join(lines), where))
        blocks.extend(pending)
    return blocks
