"""Readers for document formats that carry structure: one module per format.

Each reader is ``read(path) -> list[Block]``: the file's text in reading order,
cut into blocks that each know where they came from (a PDF page, a heading's
section, a table row). `rag.corpus` normalises the blocks, joins them into one
`Document` and keeps each block's span and location so chunks never cross a
page or section and citations can say where their quote lies.

Readers are imported on first use: their libraries are the optional ``docs``
extra, and a corpus of plain text files needs none of them.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from rag.errors import CorpusError
from rag.readers.base import Block
from rag.readers.checks import check_file

__all__ = ["Block", "READERS", "read_blocks"]

#: File suffix -> module in this package that reads it.
READERS = {
    ".pdf": "pdf",
    ".docx": "word",
    ".html": "web",
    ".htm": "web",
    ".epub": "epub",
    ".md": "markdown",
    ".pptx": "slides",
    ".xlsx": "sheets",
}
#: The library each reader module needs (for the install hint).
_NEEDS = {"pdf": "pypdf", "word": "python-docx", "web": "beautifulsoup4", "epub": "ebooklib", "slides": "python-pptx",
          "sheets": "openpyxl"}


def read_blocks(path: Path) -> list[Block]:
    """Blocks of one file, by its suffix; raise CorpusError naming the missing extra."""
    name = READERS.get(path.suffix.lower())
    if name is None:
        raise CorpusError(f"{path}: no reader for {path.suffix or '(none)'} files")
    check_file(path)  # a mislabelled file or a zip bomb is refused before any parser sees it
    try:
        module = importlib.import_module(f"rag.readers.{name}")
        return module.read(path)
    except ImportError as e:
        raise CorpusError(f"{path}: reading {path.suffix} files needs {_NEEDS.get(name, name)} ({e}); "
                          "install the docs extra: pip install -e '.[docs]'") from e
    except CorpusError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file: each library fails in its own way
        raise CorpusError(f"{path}: cannot read this {path.suffix} file ({type(e).__name__}: {e}); "
                          "check that it opens, or re-save it") from e
