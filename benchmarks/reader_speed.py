"""How fast documents are read: text-layer PDF pages/s, OCR pages/s, and adding a 50-page PDF to a KB.

Files are made here from real Chinese text (articles of the default corpus):
- a text PDF of ``--pages`` pages printed by Chromium with Noto CJK (Playwright
  ``page.pdf``, as a user's exported report; its text layer carries radicals);
- a scanned PDF of ``--scanned-pages`` pages: each page the same kind of text drawn
  as a 150-dpi A4 image (1240 x 1754 pixels, 24 lines), with no text layer.

Rows: our PDF reader (`rag.readers.read_blocks`: radicals mapped, running lines
dropped, lines joined) against the baseline of bare ``pypdf`` ``extract_text``
on the same file in the same run (its accuracy scored on its text as given, ours
after normalisation, as the index holds it); OCR pages/s with the character accuracy of what
it read; and ``rag.kb.add`` of the text PDF into a new KB with the real embedder
(read, chunk, embed, write), with its chunk count.

    python benchmarks/reader_speed.py            # 50 text pages, 5 scanned pages
"""
from __future__ import annotations

import argparse
import difflib
import html
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_results  # noqa: E402

from rag.corpus import load_documents  # noqa: E402
from rag.normalize import normalize_text  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
PAGE_CHARS = 900  # about a printed A4 page of Chinese body text at 15 px
LINE_CHARS, PAGE_LINES = 40, 24  # the scanned page


def page_texts(pages: int, chars: int) -> list[str]:
    """``pages`` texts of about ``chars`` characters, cut from the default corpus in order."""
    text = "".join(d.text for d in load_documents(["data/articles.txt"]))
    return [text[i * chars:(i + 1) * chars] for i in range(pages)]


def chromium_pdf(path: Path, texts: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    body = "".join(f'<section style="break-before: page"><h2>第{n}节</h2><p>{html.escape(t)}</p></section>'
                   for n, t in enumerate(texts, 1))
    page_html = ("<html><head><meta charset='utf-8'><style>body { font-family: 'Noto Sans CJK SC'; font-size: 15px; }"
                 "</style></head><body>" + body + "</body></html>")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_content(page_html)
            page.pdf(path=str(path), format="A4")
        finally:
            browser.close()


def scanned_pdf(path: Path, texts: list[str]) -> None:
    from PIL import Image, ImageDraw, ImageFont
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    font = ImageFont.truetype(str(CJK_FONT), 26, index=2)  # index 2: the SC face
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    for text in texts:
        img = Image.new("L", (1240, 1754), 255)
        draw = ImageDraw.Draw(img)
        for i in range(PAGE_LINES):
            draw.text((90, 120 + 62 * i), text[i * LINE_CHARS:(i + 1) * LINE_CHARS], font=font, fill=0)
        c.drawImage(ImageReader(img), 0, 0, width=595, height=842)
        c.showPage()
    c.save()


def accuracy(read: str, written: str, normalise: bool = True) -> float:
    """Character accuracy of ``read`` against ``written`` (whitespace ignored); ``normalise=False``
    scores the text as a reader gave it, before `normalize_text` maps radicals to ideographs."""
    read = re.sub(r"\s+", "", normalize_text(read) if normalise else read)
    written = re.sub(r"\s+", "", normalize_text(written))
    return round(difflib.SequenceMatcher(None, read, written, autojunk=False).ratio(), 4)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--scanned-pages", type=int, default=5)
    args = ap.parse_args()
    from pypdf import PdfReader

    from rag import kb
    from rag.config import Config
    from rag.embedding import Embedder
    from rag.readers import read_blocks

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = page_texts(args.pages, PAGE_CHARS)
        text_pdf = tmp / "report.pdf"
        chromium_pdf(text_pdf, texts)
        pages = len(PdfReader(str(text_pdf)).pages)
        raw, t_raw = timed(lambda: [p.extract_text() for p in PdfReader(str(text_pdf)).pages])
        blocks, t_ours = timed(read_blocks, text_pdf)
        written = "".join(f"第{n}节{t}" for n, t in enumerate(texts, 1))
        rows.append({"what": "text PDF, bare pypdf extract_text (baseline)", "pages": pages, "seconds": round(t_raw, 2),
                     "pages/s": round(pages / t_raw, 1), "char accuracy": accuracy("".join(raw), written, normalise=False)})
        rows.append({"what": "text PDF, rag.readers (radicals mapped, running lines dropped, lines joined)",
                     "pages": pages, "seconds": round(t_ours, 2), "pages/s": round(pages / t_ours, 1),
                     "char accuracy": accuracy("".join(b.text for b in blocks), written)})

        scans = page_texts(args.scanned_pages, LINE_CHARS * PAGE_LINES)
        scan_pdf = tmp / "scan.pdf"
        scanned_pdf(scan_pdf, scans)
        blocks, t_ocr = timed(read_blocks, scan_pdf)
        rows.append({"what": "scanned PDF, OCR (rapidocr-onnxruntime, 150 dpi)", "pages": args.scanned_pages,
                     "seconds": round(t_ocr, 2), "pages/s": round(args.scanned_pages / t_ocr, 2),
                     "char accuracy": accuracy("".join(b.text for b in blocks), "".join(scans))})

        config = Config()
        embedder, t_load = timed(Embedder, config.embedding)
        kb.create("bench", tmp / "kbs", config)
        changes, t_add = timed(kb.add, "bench", [text_pdf], config, lambda: embedder, tmp / "kbs")
        chunks = kb.read_manifest(kb.kb_dir("bench", tmp / "kbs")).get("counts", {}).get("chunks")
        rows.append({"what": f"rag.kb.add of the {pages}-page text PDF to a new KB (read, chunk, embed, write)",
                     "pages": pages, "seconds": round(t_add, 2), "pages/s": round(pages / t_add, 2), "chunks": chunks,
                     "embedder load s (apart)": round(t_load, 2)})
    print(table(rows))
    path = write_results("reader_speed", rows, machine_now=machine())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
