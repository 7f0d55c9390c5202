"""Excel ``.xlsx`` (openpyxl): each worksheet as one table, one block per row, the header with the first.

A sheet's first non-empty row is its header. Rows are numbered as in every other
table (`rag.readers.base.table_blocks`: row 1 is the first row under the header,
empty rows skipped), and the location names the sheet:
``{"sheet": "预算", "table": 2, "row": 5}``. Cells show their stored values; a
formula shows the value Excel last computed (a file written by a program that never
computed it shows the cell empty). Hidden sheets are read too: their data is in the file.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from rag.errors import CorpusError
from rag.readers.base import Block, table_blocks

#: Most non-empty rows read from one workbook; a larger one is refused (split it, or export the part to ask about).
MAX_ROWS = 50_000


def _value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, _dt.datetime):
        return value.date().isoformat() if value.time() == _dt.time() else value.isoformat(sep=" ")
    return str(value)


def read(path: Path) -> list[Block]:
    from openpyxl import load_workbook

    workbook = load_workbook(str(path), read_only=True, data_only=True)
    blocks: list[Block] = []
    total = 0
    try:
        for table, sheet in enumerate(workbook.worksheets, start=1):
            rows = []
            for row in sheet.iter_rows(values_only=True):
                cells = [_value(v) for v in row]
                while cells and not cells[-1].strip():
                    cells.pop()
                if not any(c.strip() for c in cells):
                    continue
                total += 1
                if total > MAX_ROWS:
                    raise CorpusError(f"{path}: over {MAX_ROWS:,} filled rows; split the workbook, or save the "
                                      "sheets you want to ask about as a smaller file")
                rows.append(cells)
            blocks.extend(Block(b.text, {"sheet": sheet.title, **b.location}) for b in table_blocks(rows, table, []))
    finally:
        workbook.close()
    return blocks
