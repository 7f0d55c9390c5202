"""PDF (pypdf): one block per page; pages without a text layer go through OCR.

OCR uses rapidocr-onnxruntime, whose wheel ships Chinese detection and
recognition models (offline). A scanned page is usually one embedded image,
which pypdf extracts, so no renderer (and no AGPL PyMuPDF) is needed.
"""
from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from pathlib import Path

from rag.errors import CorpusError
from rag.readers.base import Block

logger = logging.getLogger(__name__)

MIN_TEXT_CHARS = 10  # a page with fewer visible characters is treated as scanned
EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be a running header or footer
# A line that ends a sentence or a clause a paragraph can end with.
_SENTENCE_END = re.compile(r"[。！？；：…」』”）)!?.:;]$")
_HAS_CJK = re.compile(r"[\u3400-\u9fff\u2e80-\u2fdf\u3000-\u303f\uff00-\uffef]")


MAX_PAGES = 2000  # a longer file is refused: OCR alone could take hours, and it is rarely one document
OCR_INSTALL = 'pip install -e ".[docs]"'


def read(path: Path) -> list[Block]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        _unlock(reader, path)
        count = len(reader.pages)
        if count > MAX_PAGES:
            raise CorpusError(f"{path}: the PDF has {count:,} pages, over the limit of {MAX_PAGES:,}; "
                              "split it into smaller files (e.g. by chapter) and add those")
        pages, unread = [], []
        for n, page in enumerate(reader.pages, start=1):
            lines, needs_ocr = _page_lines(page, path, n)
            pages.append(lines)
            if needs_ocr:
                unread.append(n)
    except (PdfReadError, ValueError, KeyError) as e:
        raise CorpusError(f"{path}: unreadable PDF ({e})") from e
    pages = drop_running_lines(pages)
    blocks = []
    for n, lines in enumerate(pages, start=1):
        text = join_lines(lines)
        if text:
            blocks.append(Block(text, {"page": n}))
    if unread:
        _report_unread(path, unread, count, has_text=bool(blocks))
    return blocks


def _unlock(reader, path: Path) -> None:
    """Open a PDF that is encrypted with an empty user password; refuse one that needs a password."""
    if not reader.is_encrypted:
        return
    from pypdf.errors import DependencyError

    try:
        opened = reader.decrypt("")  # "owner password only" files open without one
    except DependencyError as e:  # AES needs the cryptography package
        raise CorpusError(f"{path}: the PDF is encrypted and decrypting it needs the cryptography package ({e}); "
                          "pip install cryptography, or remove the encryption and add the file again") from e
    if not opened:
        raise CorpusError(f"{path}: the PDF is encrypted (password-protected); remove the password "
                          "(open it with the password and save or print an unprotected copy, "
                          "or run qpdf --decrypt --password=... in.pdf out.pdf) and add that copy")
    logger.info("%s is encrypted without a user password; read it as is", path)


def _report_unread(path: Path, unread: list[int], count: int, has_text: bool) -> None:
    """Scanned pages skipped because OCR is missing: an error when nothing else was read, else a warning."""
    shown = ", ".join(map(str, unread[:20])) + (" ..." if len(unread) > 20 else "")
    if not has_text:
        raise CorpusError(f"{path}: no page has a text layer ({len(unread)} of {count} pages are scanned images) "
                          f"and OCR (rapidocr-onnxruntime) is not installed; install it with {OCR_INSTALL}, "
                          "or give a PDF with a text layer")
    logger.warning("%s: pages %s have no text layer and were skipped because OCR (rapidocr-onnxruntime) is not "
                   "installed; install it with %s to read them", path, shown, OCR_INSTALL)


def _page_lines(page, path: Path, number: int) -> tuple[list[str], bool]:
    """The page's lines, and whether it needed OCR that is not installed."""
    text = page.extract_text() or ""
    lines = [line.strip() for line in text.splitlines()]
    if len("".join(text.split())) >= MIN_TEXT_CHARS:
        return lines, False
    engine = _ocr_engine()
    if engine is None:
        return lines, _has_images(page)  # a blank page lost nothing
    ocr = ocr_page(page, engine)
    if ocr:
        logger.info("%s page %d has no text layer; read %d lines by OCR", path, number, len(ocr))
    return ocr or lines, False


def _has_images(page) -> bool:
    try:
        return len(page.images) > 0
    except Exception:  # noqa: BLE001 - a broken image dictionary: report the page as unread
        return True


@functools.lru_cache(maxsize=1)
def _ocr_engine():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return None
    return RapidOCR()


def ocr_page(page, engine=None) -> list[str]:
    """Text lines of a page's embedded images, top to bottom; [] without OCR or images."""
    engine = engine if engine is not None else _ocr_engine()
    if engine is None:
        return []
    import numpy as np

    lines: list[str] = []
    for image in page.images:
        try:
            pixels = np.array(image.image.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - an undecodable image must not stop the document
            logger.warning("skipping an undecodable page image (%s)", e)
            continue
        result, _ = engine(pixels)
        lines.extend(_ocr_lines(result or []))
    return lines


def _ocr_lines(result: list) -> list[str]:
    """Merge OCR boxes on the same row (their vertical centres within half a box height)."""
    rows: list[list[tuple[float, str]]] = []
    last_y, last_h = None, 0.0
    for box, text, _score in sorted(result, key=lambda r: (r[0][0][1] + r[0][2][1]) / 2):
        y = (box[0][1] + box[2][1]) / 2
        h = abs(box[2][1] - box[0][1])
        if last_y is not None and abs(y - last_y) < max(h, last_h) / 2:
            rows[-1].append((box[0][0], text))
        else:
            rows.append([(box[0][0], text)])
        last_y, last_h = y, h
    return [" ".join(t for _, t in sorted(row)) for row in rows]


def _key(line: str) -> str:
    return re.sub(r"\d+", "#", "".join(line.split()))


def drop_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Drop headers and footers: lines that recur near the top or bottom of most pages.

    Digits are ignored when comparing ("第 3 页" matches "第 4 页").
    """
    if len(pages) < 2:
        return pages
    edges = []
    for lines in pages:
        kept = [line for line in lines if line]
        edges.append(set(map(_key, kept[:EDGE_LINES] + kept[-EDGE_LINES:])))
    counts = Counter(k for keys in edges for k in keys)
    running = {k for k, c in counts.items() if c >= max(2, 0.6 * len(pages)) and k}
    out = []
    for lines in pages:
        kept = [line for line in lines if line]
        top = [i for i, line in enumerate(kept[:EDGE_LINES]) if _key(line) in running]
        tail = max(0, len(kept) - EDGE_LINES)
        bottom = [tail + i for i, line in enumerate(kept[tail:]) if _key(line) in running]
        drop = set(top) | set(bottom)
        out.append([line for i, line in enumerate(kept) if i not in drop])
    return out


def join_lines(lines: list[str]) -> str:
    """Rejoin lines broken inside a sentence; keep paragraph breaks.

    A line ends a paragraph when it is clearly shorter than the page's full
    lines (a heading, a paragraph's last line) and either ends a sentence or
    is very short; a blank line always does.
    """
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return ""
    full = lengths[int(0.9 * (len(lengths) - 1))]
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not line:
            if current:
                paragraphs.append(current)
            current = ""
            continue
        current = _concat(current, line)
        short = len(line) < 0.85 * full
        if (short and _SENTENCE_END.search(line)) or len(line) < 0.5 * full:
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n".join(paragraphs)


def _concat(left: str, right: str) -> str:
    if not left:
        return right
    if left.endswith("-") and left[-2:-1].isalpha() and right[:1].islower():
        return left[:-1] + right  # a hyphenated English word
    if _HAS_CJK.search(left[-1]) or _HAS_CJK.search(right[0]):
        return left + right
    return f"{left} {right}"
