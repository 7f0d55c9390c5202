"""Readers for PDF (text and scanned), Word, HTML, EPUB and Markdown, on files the tests write."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from rag.chunking import chunk_documents
from rag.corpus import load_documents
from rag.normalize import normalize_text
from rag.readers import read_blocks

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")

PDF_PAGES = [
    ["一、概况", "⻘⽲社区图书馆现有藏书⼀万⼆千册，全年接待读者约三万人次，", "其中少年儿童读者占一半。"],
    ["二、预算安排", "馆⻓表示，明年的购书预算为三十万元，其中儿童读物", "占四成，其余用于地方文献。"],
    ["三、开放时间", "图书馆每周二至周日开放，周一闭馆整理书架和设备。", "节假日照常开放。"],
]


def _text_pdf(path: Path, pages=PDF_PAGES) -> Path:
    pytest.importorskip("reportlab")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    for n, lines in enumerate(pages, start=1):
        c.setFont("STSong-Light", 11)
        c.drawString(72, 800, "⻘⽲社区图书馆年度报告（内部资料）")  # running header
        y = 720
        for line in lines:
            c.drawString(72, y, line)
            y -= 18
        c.drawString(280, 40, f"第 {n} 页")  # running footer
        c.showPage()
    c.save()
    return path


def _image_of(lines: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    if not CJK_FONT.exists():
        pytest.skip(f"no CJK font at {CJK_FONT} to draw the scanned page")
    font = ImageFont.truetype(str(CJK_FONT), 40, index=2)  # index 2: the SC face of the collection
    img = Image.new("RGB", (1240, 120 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((60, 60 + 90 * i), line, font=font, fill="black")
    return img


SCANNED = ["扫描页：社区图书馆开放时间", "每周二至周日上午九点开馆。"]


def _scanned_pdf(path: Path) -> Path:
    pytest.importorskip("reportlab")
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path), pagesize=(595, 842))
    c.setFont("STSong-Light", 11)
    c.drawString(72, 720, "第一页有文字层：社区图书馆的基本情况介绍。")
    c.showPage()
    c.drawImage(ImageReader(_image_of(SCANNED)), 0, 500, width=595, height=595 * 300 / 1240)  # page 2: only an image
    c.showPage()
    c.save()
    return path


def _docx(path: Path) -> Path:
    docx = pytest.importorskip("docx")
    d = docx.Document()
    d.add_heading("社区图书馆年度报告", level=1)
    d.add_paragraph("本报告介绍图书馆一年来的工作。")
    d.add_heading("预算安排", level=2)
    d.add_paragraph("明年预算分为两项，见下表。")
    table = d.add_table(rows=3, cols=2)
    for r, row in enumerate([("项目", "金额"), ("图书采购", "三十万元"), ("读者活动经费", "五万元")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("开放时间", level=2)
    d.add_paragraph("图书馆每周二至周日开放。")
    d.save(str(path))
    return path


HTML = """<!doctype html><html><head><title>页面</title><style>.x{color:red}</style>
<script>var secret = "脚本内容不应出现";</script></head><body>
<header><p>站点横幅不应出现</p></header><nav><a href="/">首页</a> 导航菜单不应出现</nav>
<main><header><h1>社区图书馆</h1></header><p>图书馆位于青禾社区中心二楼。</p>
<h2>借阅规则</h2><p>每位读者一次最多借阅五本书，借期三十天。</p><ul><li>逾期不收费用。</li></ul>
<h2>联系方式</h2><p>电话为八八六六五五。</p></main>
<footer>版权所有 页脚不应出现</footer></body></html>"""


def _epub(path: Path) -> Path:
    pytest.importorskip("ebooklib")
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("wenyuan-test")
    book.set_title("社区故事")
    book.set_language("zh")
    chapters = []
    for n, (head, sub, body) in enumerate([("第一章 建馆", "缘起", "二〇一〇年，居民们捐出第一批图书。"),
                                           ("第二章 发展", "扩建", "二〇一八年，图书馆扩建到三百平方米。")], start=1):
        ch = epub.EpubHtml(title=head, file_name=f"ch{n}.xhtml", lang="zh")
        ch.content = f"<html><body><h1>{head}</h1><p>本章讲述图书馆的历史。</p><h2>{sub}</h2><p>{body}</p></body></html>"
        book.add_item(ch)
        chapters.append(ch)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    epub.write_epub(str(path), book)
    return path


MARKDOWN = "# 年度报告\n\n引言部分的文字。\n\n## 预算\n\n预算部分的文字。\n\n### 细目\n\n```\n# 这不是标题\n```\n\n细目部分的文字。\n\n## 开放\n\n开放部分的文字。\n"


def test_radicals_map_to_ideographs_and_chinese_punctuation_stays() -> None:
    assert normalize_text("⻘⽲社区藏书⼀万⼆千册，馆⻓说：“好。”") == "青禾社区藏书一万二千册，馆长说：“好。”"
    assert normalize_text("⻝堂、⻢路、⻅面、⻆落、⻔口、⻋站") == "食堂、马路、见面、角落、门口、车站"


def test_pdf_text_pages_headers_dropped_lines_joined(tmp_path) -> None:
    pytest.importorskip("pypdf")
    [doc] = load_documents([_text_pdf(tmp_path / "report.pdf")])
    assert [loc for _, _, loc in doc.spans] == [{"page": 1}, {"page": 2}, {"page": 3}]
    assert "年度报告" not in doc.text and "内部资料" not in doc.text and "第 2 页" not in doc.text and "第2页" not in doc.text
    assert "青禾社区图书馆现有藏书一万二千册，全年接待读者约三万人次，其中少年儿童读者占一半。" in doc.text  # joined, mapped
    assert "馆长表示" in doc.text and "⻓" not in doc.text
    page2 = doc.text[doc.spans[1][0]:doc.spans[1][1]]
    assert page2 == "二、预算安排\n馆长表示，明年的购书预算为三十万元，其中儿童读物占四成，其余用于地方文献。"
    chunks = chunk_documents([doc], max_chars=40, overlap_sentences=1)
    assert {c.location["page"] for c in chunks} == {1, 2, 3}
    for c in chunks:  # no chunk crosses a page
        s, e, _ = doc.spans[c.location["page"] - 1]
        assert s <= c.start and c.end <= e and doc.text[c.start:c.end] == c.text


def test_scanned_pdf_page_is_read_by_ocr(tmp_path) -> None:
    pytest.importorskip("pypdf")
    pytest.importorskip("rapidocr_onnxruntime")
    blocks = read_blocks(_scanned_pdf(tmp_path / "scan.pdf"))
    assert [b.location for b in blocks] == [{"page": 1}, {"page": 2}]
    assert "基本情况" in blocks[0].text
    ocr = normalize_text(blocks[1].text)
    expected = "".join(SCANNED)
    assert difflib.SequenceMatcher(None, ocr, expected).ratio() >= 0.90, ocr  # the bar; 1.0 measured
    assert "图书馆" in ocr and "九点" in ocr


def test_docx_headings_paragraphs_and_table_rows(tmp_path) -> None:
    [doc] = load_documents([_docx(tmp_path / "report.docx")])
    assert doc.title == "社区图书馆年度报告"
    budget = ["社区图书馆年度报告", "预算安排"]
    assert [loc for _, _, loc in doc.spans] == [
        {"section": ["社区图书馆年度报告"]},
        {"section": budget},
        {"section": budget, "table": 1, "row": 1},
        {"section": budget, "table": 1, "row": 2},
        {"section": ["社区图书馆年度报告", "开放时间"]},
    ]
    assert "|项目|金额|\n| --- | --- |\n|图书采购|三十万元|\n|读者活动经费|五万元|" in doc.text  # one Markdown table
    chunks = chunk_documents([doc], max_chars=200)
    [table] = [c for c in chunks if "table" in c.location]  # a table that fits the budget is one chunk
    assert table.text == "|项目|金额|\n| --- | --- |\n|图书采购|三十万元|\n|读者活动经费|五万元|"
    assert table.location == {"section": budget, "table": 1, "row": 1, "rows": [1, 2]}
    assert all("开放" not in c.text or c.location["section"][-1] == "开放时间" for c in chunks)
    small = chunk_documents([doc], max_chars=40)  # over budget: whole rows, the header as each later row's context
    rows = [c for c in small if "table" in c.location]
    assert [c.location["row"] for c in rows] == [1, 2]
    assert rows[1].text == "|读者活动经费|五万元|" and rows[1].context.endswith("|项目|金额|\n| --- | --- |")


def test_html_main_text_and_headings(tmp_path) -> None:
    pytest.importorskip("bs4")
    path = tmp_path / "page.html"
    path.write_text(HTML, encoding="utf-8")
    [doc] = load_documents([path])
    for junk in ("脚本内容", "导航菜单", "页脚", "color", "站点横幅"):
        assert junk not in doc.text
    sections = {doc.text[s:e]: loc["section"] for s, e, loc in doc.spans}
    assert sections == {
        "社区图书馆\n图书馆位于青禾社区中心二楼。": ["社区图书馆"],
        "借阅规则\n每位读者一次最多借阅五本书，借期三十天。\n逾期不收费用。": ["社区图书馆", "借阅规则"],
        "联系方式\n电话为八八六六五五。": ["社区图书馆", "联系方式"],
    }


def test_epub_chapters_and_headings(tmp_path) -> None:
    [doc] = load_documents([_epub(tmp_path / "book.epub")])
    sections = [loc["section"] for _, _, loc in doc.spans]
    assert sections == [["第一章 建馆"], ["第一章 建馆", "缘起"], ["第二章 发展"], ["第二章 发展", "扩建"]]
    assert "居民们捐出第一批图书" in doc.text and "三百平方米" in doc.text


def test_markdown_section_paths(tmp_path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    [doc] = load_documents([path])
    assert doc.title == "年度报告"
    assert "```\n#这不是标题\n```" in doc.text  # a "#" line inside a code fence is not a heading
    located = [(doc.text[s:e].splitlines()[-1], loc.get("section")) for s, e, loc in doc.spans]
    assert located == [
        ("引言部分的文字。", ["年度报告"]),
        ("预算部分的文字。", ["年度报告", "预算"]),
        ("细目部分的文字。", ["年度报告", "预算", "细目"]),
        ("开放部分的文字。", ["年度报告", "开放"]),
    ]


def test_index_keeps_locations_and_old_indexes_load(tmp_path, fake_config, fake_embedder) -> None:
    from rag.build import build_index
    from rag.index import Index

    index = build_index([_docx(tmp_path / "r.docx")], tmp_path / "idx", fake_config, lambda: fake_embedder)
    loaded = Index.load(tmp_path / "idx")
    assert [c.location for c in loaded.chunks] == [c.location for c in index.chunks]
    assert any(c.location.get("table") == 1 for c in loaded.chunks)
    assert loaded.documents[0].spans == index.documents[0].spans
    for name, key in (("chunks.jsonl", "location"), ("documents.jsonl", "spans")):  # as an older build wrote them
        path = tmp_path / "idx" / name
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != key}, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    old = Index.load(tmp_path / "idx")
    assert all(c.location == {} for c in old.chunks) and old.documents[0].spans == ()


def test_cli_ask_and_search_json_carry_locations(tmp_path, fake_config, fake_embedder, monkeypatch) -> None:
    from click.testing import CliRunner

    from rag.build import build_index
    from rag.cli import cli

    pytest.importorskip("pypdf")
    corpus = tmp_path / "docs"
    corpus.mkdir()
    _text_pdf(corpus / "report.pdf")
    _docx(corpus / "plan.docx")
    build_index([corpus], tmp_path / "idx", fake_config, lambda: fake_embedder)
    monkeypatch.setattr("rag.pipeline.Config", lambda: fake_config)  # the CLI's default config names the fake model
    monkeypatch.setattr("rag.pipeline.Embedder", lambda *a, **k: fake_embedder)
    runner = CliRunner()
    result = runner.invoke(cli, ["ask", "馆长表示明年的购书预算为多少？", "--index-dir", str(tmp_path / "idx"),
                                 "--generator", "extractive", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert not answer["refused"] and answer["citations"], answer["text"]
    cite = answer["citations"][0]
    assert cite["doc_id"] == "report" and cite["location"] == {"page": 2} and "三十万元" in cite["quote"]
    assert answer["passages"][cite["marker"] - 1]["chunk"]["location"] == {"page": 2}
    result = runner.invoke(cli, ["search", "读者活动经费", "--index-dir", str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output)[0]
    assert top["doc_id"] == "plan" and "读者活动经费" in top["text"]
    assert top["location"] == {"section": ["社区图书馆年度报告", "预算安排"], "table": 1, "row": 1, "rows": [1, 2]}


def test_ui_sources_show_page_and_section() -> None:
    from rag.records import Answer, Chunk, Citation, Passage
    from ui.render import answer_payload, sources_html

    chunk = Chunk("r#1", "r", "预算为三十万元。", 0, 8, title="报告", location={"page": 2, "section": ["二、预算安排"]})
    cite = Citation(1, "r", "r#1", "三十万元", 3, 7, location=dict(chunk.location))
    answer = Answer("预算？", "三十万元[1]", citations=(cite,), passages=(Passage(chunk, 1.0),))
    assert "第2页 · 二、预算安排" in sources_html(answer)
    assert answer_payload(answer)["citations"][0]["location"] == {"page": 2, "section": ["二、预算安排"]}


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".epub"])
def test_damaged_file_is_a_clear_corpus_error(tmp_path, suffix) -> None:
    from rag.errors import CorpusError

    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"not really a " + suffix.encode() + b" file" * 20)
    with pytest.raises(CorpusError, match="broken"):
        load_documents([path])


def _big_table_docx(path: Path, rows: int = 60, cell: str = "") -> Path:
    docx = pytest.importorskip("docx")
    d = docx.Document()
    d.add_heading("分馆藏书统计", level=1)
    d.add_paragraph("下表列出各分馆的藏书和读者数量。")
    table = d.add_table(rows=rows + 1, cols=3)
    for c, value in enumerate(("分馆", "藏书（册）", "年读者（人次）")):
        table.cell(0, c).text = value
    for r in range(1, rows + 1):
        for c, value in enumerate((f"第{r}分馆{cell}", str(1000 + 37 * r), str(5000 + 11 * r))):
            table.cell(r, c).text = value
    d.add_paragraph("统计截至年底。")
    d.save(str(path))
    return path


def test_long_docx_table_is_cut_into_row_groups_that_carry_the_header(tmp_path) -> None:
    [doc] = load_documents([_big_table_docx(tmp_path / "branches.docx")])
    header = "|分馆|藏书（册）|年读者（人次）|\n| --- | --- | --- |"
    assert doc.text.count(header) == 1  # the document itself holds the table once
    chunks = chunk_documents([doc], max_chars=300, overlap_sentences=1)
    table = [c for c in chunks if "table" in c.location]
    assert len(table) > 3 and all(len(c.text) <= 300 for c in table)
    assert table[0].text.startswith(header) and table[0].location["row"] == 1
    rows_seen = []
    for c in table:
        assert doc.text[c.start:c.end] == c.text
        first, last = c.location["rows"]
        assert c.location == {"section": ["分馆藏书统计"], "table": 1, "row": first, "rows": [first, last]}
        lines = c.text.split("\n")[2:] if first == 1 else c.text.split("\n")
        assert [line.split("|")[1] for line in lines] == [f"第{r}分馆" for r in range(first, last + 1)]  # whole rows
        rows_seen.extend(range(first, last + 1))
        if first > 1:  # every later group repeats the header, in its context, within the budget
            assert c.context.endswith(header) and header not in c.text
            assert "分馆|" not in c.context.replace(header, "")  # no stray row of the table before the header
            assert len(header) + 1 + len(c.text) <= 300
            assert c.with_context.endswith(f"{header}\n{c.text}")  # reads as a Markdown table
    assert rows_seen == list(range(1, 61))  # each row exactly once, in order
    row_37 = next(c for c in table if "|第37分馆|" in c.text)
    assert row_37.location["row"] <= 37 <= row_37.location["rows"][1]
    assert [c.id for c in chunks] == [f"branches#{n}" for n in range(len(chunks))]
    assert chunk_documents([doc], max_chars=300) == chunks  # same document, same chunks and ids
    fits = chunk_documents([doc], max_chars=5000)  # within budget: one chunk holding the whole table
    assert [c.location.get("rows") for c in fits if "table" in c.location] == [[1, 60]]


def test_table_row_over_the_budget_is_cut_with_its_location(tmp_path) -> None:
    [doc] = load_documents([_big_table_docx(tmp_path / "wide.docx", rows=3, cell="，备注" * 40)])
    chunks = [c for c in chunk_documents([doc], max_chars=100) if "table" in c.location]
    assert all(len(c.text) <= 100 for c in chunks)
    assert sorted({c.location["row"] for c in chunks}) == [1, 2, 3]
    assert all("rows" not in c.location for c in chunks)
    assert all(c.context.endswith("| --- | --- | --- |") for c in chunks if c.location["row"] > 1)
