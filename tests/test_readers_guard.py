"""Documents people really have: encrypted, huge, mislabelled, zip bombs, scans without OCR.

Every case is a real small file the test writes; each must end in a CorpusError
that names the file and says what to do, and a knowledge base must keep what
it held when one of the files added to it is bad.
"""
from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.corpus import load_documents
from rag.errors import CorpusError
from rag.readers import read_blocks
from tests.conftest import FakeEmbedder
from tests.test_readers import _docx, _epub, _text_pdf

pypdf = pytest.importorskip("pypdf")


def _encrypted(path: Path, source: Path, user_password: str) -> Path:
    writer = pypdf.PdfWriter(clone_from=str(source))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    writer.write(str(path))
    return path


def test_password_protected_pdf_says_remove_the_password(tmp_path) -> None:
    plain = _text_pdf(tmp_path / "plain.pdf")
    locked = _encrypted(tmp_path / "locked.pdf", plain, user_password="user-secret")
    with pytest.raises(CorpusError, match=r"locked\.pdf: the PDF is encrypted \(password-protected\); remove the password"):
        load_documents([locked])
    # Encrypted with only an owner password (print/copy restrictions): opens without one, reads as the original.
    restricted = _encrypted(tmp_path / "restricted.pdf", plain, user_password="")
    assert [b.text for b in read_blocks(restricted)] == [b.text for b in read_blocks(plain)]


def test_pdf_over_the_page_limit_names_count_and_limit(tmp_path, monkeypatch) -> None:
    path = _text_pdf(tmp_path / "long.pdf")  # three pages
    monkeypatch.setattr("rag.readers.pdf.MAX_PAGES", 2)
    with pytest.raises(CorpusError, match=r"long\.pdf: the PDF has 3 pages, over the limit of 2; split it"):
        read_blocks(path)
    monkeypatch.setattr("rag.readers.pdf.MAX_PAGES", 3)
    assert [b.location for b in read_blocks(path)] == [{"page": 1}, {"page": 2}, {"page": 3}]


def _zip_as(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("suffix", [".docx", ".epub"])
def test_zip_bomb_is_refused_before_it_is_opened(tmp_path, suffix, monkeypatch) -> None:
    # 30 MB of zeros packs into about 30 KB: a ratio near 1000:1 that no real document has.
    bomb = _zip_as(tmp_path / f"bomb{suffix}", {"[Content_Types].xml": b"<Types/>", "word/document.xml": bytes(30_000_000)})
    assert bomb.stat().st_size < 100_000
    opened = []
    monkeypatch.setattr("docx.Document", lambda *a, **k: opened.append(a))  # the parser must never see it
    with pytest.raises(CorpusError, match=rf"bomb\{suffix}: compressed [\d,]+:1, over the limit of 100:1 .*zip bomb"):
        load_documents([bomb])
    assert opened == []


def test_archive_over_the_unpacked_size_limit(tmp_path, monkeypatch) -> None:
    path = _docx(tmp_path / "report.docx")  # a genuine document: fine under the real limits
    assert read_blocks(path)
    monkeypatch.setattr("rag.readers.checks.MAX_UNZIPPED_BYTES", 1_000)
    with pytest.raises(CorpusError, match=r"report\.docx: unpacks to [\d,]+ bytes, over the 1,000-byte limit"):
        read_blocks(path)


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, content, found", [
    ("notes.pdf", "这其实是一份纯文本笔记。".encode(), "plain text"),
    ("scan.pdf", None, "a PNG image"),  # a scan saved as PNG, renamed
    ("letter.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "an old Office file"),  # a .doc renamed
    ("page.docx", b"<!DOCTYPE html><html><body>saved web page</body></html>", "an HTML page"),
    ("book.epub", b"%PDF-1.4\n%fake", "a PDF"),
])
def test_lying_extension_says_what_the_content_is(tmp_path, name, content, found) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else _png_bytes())
    kind = {".pdf": "PDF", ".docx": "DOCX", ".epub": "EPUB"}[path.suffix]
    with pytest.raises(CorpusError, match=rf"{name}: the content is not a {kind} file but {found}"):
        load_documents([path])


def test_real_files_pass_the_checks(tmp_path) -> None:
    for path in (_text_pdf(tmp_path / "a.pdf"), _docx(tmp_path / "b.docx"), _epub(tmp_path / "c.epub")):
        assert read_blocks(path), path


def _image_pdf(path: Path, text_pages: tuple[int, ...] = ()) -> Path:
    """Two pages, each an embedded image (a scan); the pages in ``text_pages`` also carry text."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    img = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(img).rectangle((20, 20, 380, 80), outline="black")
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    for n in (1, 2):
        if n in text_pages:
            c.setFont("STSong-Light", 11)
            c.drawString(72, 720, f"第{n}页有文字层：社区图书馆的基本情况介绍。")
        c.drawImage(ImageReader(img), 72, 400, width=400, height=100)
        c.showPage()
    c.save()
    return path


@pytest.fixture
def no_ocr(monkeypatch):
    """rapidocr-onnxruntime cannot be imported (None in sys.modules makes ``import`` fail)."""
    from rag.readers import pdf

    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    pdf._ocr_engine.cache_clear()
    yield
    pdf._ocr_engine.cache_clear()  # the next test imports the real engine again


def test_scanned_pdf_without_ocr_names_the_extra(tmp_path, no_ocr) -> None:
    pytest.importorskip("reportlab")
    path = _image_pdf(tmp_path / "scan.pdf")
    with pytest.raises(CorpusError, match=r'scan\.pdf: no page has a text layer \(2 of 2 pages are scanned images\) '
                                          r'and OCR \(rapidocr-onnxruntime\) is not installed; install it with '
                                          r'pip install -e "\.\[docs\]"'):
        load_documents([path])


def test_text_pages_are_kept_and_scanned_ones_warned_without_ocr(tmp_path, no_ocr, caplog) -> None:
    pytest.importorskip("reportlab")
    path = _image_pdf(tmp_path / "mixed.pdf", text_pages=(1,))
    with caplog.at_level(logging.WARNING, logger="rag.readers.pdf"):
        blocks = read_blocks(path)
    assert [b.location for b in blocks] == [{"page": 1}] and "基本情况" in blocks[0].text
    [warning] = [r.getMessage() for r in caplog.records]
    assert "mixed.pdf: pages 2 have no text layer" in warning and 'pip install -e ".[docs]"' in warning


def test_kb_add_with_a_bad_file_names_it_and_keeps_the_kb(tmp_path, monkeypatch) -> None:
    from rag import kb
    from rag.cli import cli

    monkeypatch.setenv("WENYUAN_INDEX_ROOT", str(tmp_path / "kbs"))
    monkeypatch.setattr("rag.embedding.Embedder", lambda *a, **k: FakeEmbedder())
    monkeypatch.setattr("rag.pipeline.Embedder", lambda *a, **k: FakeEmbedder())
    (tmp_path / "tea.txt").write_text("龙井茶产于杭州西湖一带，是中国著名的绿茶。", encoding="utf-8")
    (tmp_path / "panda.md").write_text("# 大熊猫\n\n大熊猫主要生活在四川的山林里，以竹子为食。", encoding="utf-8")
    bad = _encrypted(tmp_path / "budget.pdf", _text_pdf(tmp_path / "plain.pdf"), user_password="user-secret")
    runner = CliRunner()
    assert runner.invoke(cli, ["kb", "create", "notes"]).exit_code == 0
    assert runner.invoke(cli, ["kb", "add", "notes", str(tmp_path / "tea.txt")]).exit_code == 0
    before = (tmp_path / "kbs" / "notes" / "manifest.json").read_text(encoding="utf-8")

    result = runner.invoke(cli, ["kb", "add", "notes", str(tmp_path / "panda.md"), str(bad)])
    assert result.exit_code != 0
    assert f"{bad}: the PDF is encrypted (password-protected); remove the password" in result.output
    # All files are read before the KB is touched: nothing of this add is written, nothing earlier is lost.
    assert (tmp_path / "kbs" / "notes" / "manifest.json").read_text(encoding="utf-8") == before
    assert [d.doc_id for d in kb.documents("notes")] == ["tea"]
    result = runner.invoke(cli, ["search", "龙井茶", "--kb", "notes", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["doc_id"] == "tea"
    # With the bad file left out, the good one goes in.
    result = runner.invoke(cli, ["kb", "add", "notes", str(tmp_path / "panda.md")])
    assert result.exit_code == 0, result.output
    assert sorted(d.doc_id for d in kb.documents("notes")) == ["panda", "tea"]
