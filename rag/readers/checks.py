"""Checks made before a reader opens a file: is it what its name says, and is it safe to unpack.

A file named ``.pdf`` may be a scan saved as PNG, a ``.docx`` may be an old
``.doc`` renamed; the parsers then fail with messages about xref tables or
zip headers that tell a user nothing. A ``.docx``, ``.epub``, ``.pptx`` or ``.xlsx`` is a zip
archive, and a crafted one (a "zip bomb") can unpack to gigabytes from a few
kilobytes; its sizes are checked before any parser inflates it.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from rag.errors import CorpusError

logger = logging.getLogger(__name__)

#: Most bytes the members of one .docx/.epub may unpack to.
MAX_UNZIPPED_BYTES = 200_000_000
#: Highest overall compression ratio accepted once an archive unpacks to more than RATIO_FLOOR_BYTES.
#: Real documents compress their XML 5-20x; a ratio in the hundreds is a repeated filler.
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 10_000_000
#: Most members one archive may hold (each costs memory before any is read).
MAX_ZIP_MEMBERS = 20_000

_ZIP = b"PK\x03\x04"
# File types users actually mislabel, by their first bytes, for the message.
_SIGNATURES = (
    (b"%PDF-", "a PDF"),
    (_ZIP, "a zip archive (such as .docx, .epub, .xlsx or .pptx)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (.doc, .xls or .ppt)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"{\\rtf", "an RTF document"),
)
#: Suffix -> (signature the content must start with, format name, how to fix a mismatch).
EXPECTED = {
    ".pdf": (b"%PDF-", "PDF", "export or print it to PDF again, or give it its real extension"),
    ".docx": (_ZIP, "DOCX", "open it in Word or WPS and save it as .docx"),
    ".epub": (_ZIP, "EPUB", "convert it to .epub again, or give it its real extension"),
    ".pptx": (_ZIP, "PPTX", "open it in PowerPoint or WPS and save it as .pptx"),
    ".xlsx": (_ZIP, "XLSX", "open it in Excel or WPS and save it as .xlsx"),
}
ZIPPED = (".docx", ".epub", ".pptx", ".xlsx")
_HEAD_BYTES = 1024  # PDF allows a little junk before "%PDF-"; readers search this far


def describe_content(head: bytes) -> str:
    """What the first bytes of a file look like, in words."""
    stripped = head.lstrip()
    for signature, name in _SIGNATURES:
        if stripped.startswith(signature):
            return name
    if stripped[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if not head:
        return "an empty file"
    return "plain text" if b"\x00" not in head else "binary data of an unknown kind"


def check_signature(path: Path) -> None:
    """A CorpusError when the content of ``path`` is not the format its suffix names."""
    expected = EXPECTED.get(path.suffix.lower())
    if expected is None:
        return
    signature, name, fix = expected
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e}") from e
    found = head.find(signature) if signature == b"%PDF-" else (0 if head.startswith(signature) else -1)
    if found < 0:
        raise CorpusError(f"{path}: the content is not a {name} file but {describe_content(head)}; {fix}")


def check_zip(path: Path) -> None:
    """A CorpusError when the archive at ``path`` is damaged or would unpack too much.

    The sizes come from the archive's directory; Python's zipfile never inflates
    a member past its declared size, so they bound what the parser can unpack.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CorpusError(f"{path}: damaged {path.suffix} file, its zip structure cannot be read ({e}); "
                          "open it and save it again") from e
    if len(members) > MAX_ZIP_MEMBERS:
        raise CorpusError(f"{path}: the archive holds {len(members):,} files, over the limit of "
                          f"{MAX_ZIP_MEMBERS:,}; this is not an ordinary document, re-save it or leave it out")
    unpacked = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members)
    if unpacked > MAX_UNZIPPED_BYTES:
        raise CorpusError(f"{path}: unpacks to {unpacked:,} bytes, over the {MAX_UNZIPPED_BYTES:,}-byte limit "
                          "(a zip bomb, or a document with huge embedded media); remove large images or split it")
    ratio = unpacked / max(packed, 1)
    if unpacked > RATIO_FLOOR_BYTES and ratio > MAX_COMPRESSION_RATIO:
        raise CorpusError(f"{path}: compressed {ratio:,.0f}:1, over the limit of {MAX_COMPRESSION_RATIO}:1 "
                          f"({packed:,} bytes unpack to {unpacked:,}); this looks like a zip bomb, not a document, "
                          "so it was not opened; re-save the document from its editor if it is genuine")
    logger.debug("%s: %d members, %d bytes unpacked, ratio %.1f", path, len(members), unpacked, ratio)


def check_file(path: Path) -> None:
    """All checks that apply to ``path`` by its suffix."""
    check_signature(path)
    if path.suffix.lower() in ZIPPED:
        check_zip(path)
