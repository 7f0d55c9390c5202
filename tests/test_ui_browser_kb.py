"""The "我的文档" panel in a real Chromium: upload a PDF, get an answer cited to its page, remove it, get a refusal.

Reuses the app, browser and page fixtures of tests/test_ui_browser.py (extractive
backend, so the answer is deterministic: the fact sentence shares its words with
the question).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_ui_browser import ANSWER_TIMEOUT_MS, _ask, _last_bot_text, _screenshot, app_url, browser, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "青溪县星光图书馆是哪一年开馆的？"
FACT = "青溪县星光图书馆于1987年开馆，是青溪县第一座公共图书馆。"
PAGES = [
    ["星光图书馆年度简报", "本简报介绍馆舍、藏书与读者服务的基本情况。", "第二页记载图书馆的历史。"],
    ["一、历史沿革", FACT, "馆舍在2009年扩建，阅览座位增加到三百个。"],
]
REFUSAL = "根据现有资料无法回答这个问题。"


def _pdf(path: Path) -> Path:
    pytest.importorskip("reportlab")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))  # a CID font: no font file needed, text extractable
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    for lines in PAGES:
        c.setFont("STSong-Light", 12)
        y = 760
        for line in lines:
            c.drawString(72, y, line)
            y -= 20
        c.showPage()
    c.save()
    return path


def test_upload_pdf_cite_page_then_remove_with_confirmation(page, tmp_path) -> None:  # noqa: F811
    doc = _pdf(tmp_path / "xingguang_library.pdf")
    page.locator("#wy-docs").get_by_text("我的文档").first.click()
    page.locator("#wy-upload input[type=file]").set_input_files(str(doc))
    page.locator("#wy-add").click()
    page.locator("#wy-upload-status").get_by_text("已添加").wait_for(timeout=ANSWER_TIMEOUT_MS)
    row = page.locator("#wy-file-list tr", has_text="xingguang_library.pdf")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "xingguang_library.pdf" and cells[1] == "2", cells  # pages
    assert int(cells[2]) >= 1 and cells[3][:2] == "20", cells  # chunks, time added

    _ask(page, QUESTION)
    assert "1987" in _last_bot_text(page)
    card = page.locator("#wy-sources .wy-src", has_text="1987").first
    meta = card.locator(".wy-src-meta").inner_text()
    assert "xingguang_library" in meta and "第2页" in meta, meta
    _screenshot(page, "ui-kb-pdf-cited.png")

    # Removing asks first; cancelling keeps the file.
    page.locator("#wy-remove-choice input").click()
    page.get_by_role("option", name="xingguang_library.pdf").click()
    page.locator("#wy-remove").click()
    prompt = page.locator("#wy-remove-prompt")
    prompt.get_by_text("确认移除").wait_for(timeout=10_000)
    assert "xingguang_library.pdf" in prompt.inner_text()
    page.locator("#wy-remove-cancel").click()
    page.locator("#wy-remove-confirm-box").wait_for(state="hidden", timeout=10_000)
    assert "xingguang_library.pdf" in page.locator("#wy-file-list").inner_text()

    page.locator("#wy-remove").click()
    page.locator("#wy-remove-confirm").click()
    page.locator("#wy-upload-status").get_by_text("已移除 xingguang_library.pdf").wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "xingguang_library.pdf" not in page.locator("#wy-file-list").inner_text()
    page.locator("#wy-remove-confirm-box").wait_for(state="hidden", timeout=10_000)

    _ask(page, QUESTION)
    page.locator("#wy-sources .wy-refused").wait_for(timeout=10_000)
    assert REFUSAL in _last_bot_text(page) and "1987" not in _last_bot_text(page)
    assert "xingguang_library" not in page.locator("#wy-sources").inner_text()
