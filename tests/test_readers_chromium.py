"""A Chinese PDF as people get them: printed by Chromium with Noto CJK, read back by the PDF reader.

Chromium writes CJK text through subset CID fonts whose text layer often names Kangxi
radicals and CJK radical supplements (⻓, ⼀) instead of the ideographs (长, 一); the
reader must give back the characters that were written.
"""
from __future__ import annotations

import difflib
import html
import re
from pathlib import Path

import pytest

from rag.corpus import load_documents
from rag.normalize import normalize_text
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("pypdf")

# Invented text: two sections, the second on a page of its own. Characters Noto CJK's
# text layer is known to turn into radicals (长 青 一 二 见 门 车 马 食 角 走 言) are in it.
SECTIONS = [
    ("一、社区图书馆概况", [
        "青禾社区图书馆成立于二〇一二年，现有藏书一万二千册，全年接待读者约三万人次，其中少年儿童读者占一半。",
        "馆长表示，图书馆每周二至周日开放，周一闭馆整理书架；节假日照常开放，读者可凭社区证件免费借阅。",
        "去年新增的自助借还机放在一楼门口，旁边是车站方向的出口，方便走路上学的孩子们还书。",
    ]),
    ("二、明年预算安排", [
        "明年的购书预算为三十万元，其中儿童读物占四成，地方文献占三成，其余用于数字资源和设备维护。",
        "居民代表在座谈会上提出意见：希望增加大字本图书，并在食堂旁的角落设立一个流动书架。",
        "馆方回应说，这些建议会在下个月的理事会上讨论，结果将在官网和公告栏同时公布。",
    ]),
]
RADICALS = re.compile("[\u2e80-\u2eff\u2f00-\u2fdf]")


def _page_html() -> str:
    parts = []
    for n, (heading, paragraphs) in enumerate(SECTIONS):
        style = ' style="break-before: page"' if n else ""
        parts.append(f"<h2{style}>{html.escape(heading)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    return ("<html><head><meta charset='utf-8'><style>body { font-family: 'Noto Sans CJK SC', sans-serif; "
            "font-size: 15px; width: 30em; }</style></head><body>" + "".join(parts) + "</body></html>")


@pytest.fixture(scope="module")
def chromium_pdf(tmp_path_factory) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium fonts-noto-cjk")
    path = tmp_path_factory.mktemp("pdf") / "图书馆报告.pdf"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_content(_page_html())
            page.pdf(path=str(path), format="A4")
        finally:
            browser.close()
    return path


def _bare(text: str) -> str:
    return re.sub(r"\s+", "", normalize_text(text))


def test_chromium_printed_chinese_pdf_reads_back_at_098(chromium_pdf: Path) -> None:
    [doc] = load_documents([chromium_pdf])
    assert [loc for _, _, loc in doc.spans] == [{"page": 1}, {"page": 2}]
    written = _bare("".join(h + "".join(ps) for h, ps in SECTIONS))
    read = _bare(doc.text)
    accuracy = difflib.SequenceMatcher(None, read, written, autojunk=False).ratio()
    assert accuracy >= 0.98, (accuracy, doc.text)
    assert not RADICALS.search(doc.text), RADICALS.findall(doc.text)
    for word in ("馆长表示", "一万二千册", "青禾社区", "车站方向", "食堂旁的角落"):
        assert word in read, word
    # Each section on its page: the second page starts with its heading.
    page2 = doc.text[doc.spans[1][0]:doc.spans[1][1]]
    assert page2.startswith("二、明年预算安排") and "一万二千册" not in page2
