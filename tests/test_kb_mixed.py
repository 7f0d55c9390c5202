"""One command adds a folder of every document kind to a new KB; each answers with its location; removal holds.

The files are made with the real tools of tests/test_readers.py and tests/test_readers_office.py
(reportlab text and scanned PDFs, python-docx, an HTML page, ebooklib, python-pptx,
openpyxl); retrieval runs through the CLI with the fake embedder (BM25 and coverage decide).
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.cli import cli
from test_kb import root  # noqa: F401  (fixture)
from test_readers import HTML, _docx, _epub, _scanned_pdf, _text_pdf
from test_readers_office import _deck, _workbook

pytest.importorskip("pypdf")
pytest.importorskip("rapidocr_onnxruntime")


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def top(question: str) -> dict:
    return json.loads(run("search", "--kb", "mixed", "--json", "--top-k", "3", question))[0]


def test_a_mixed_folder_in_one_command(root, tmp_path) -> None:  # noqa: F811
    folder = tmp_path / "资料"
    folder.mkdir()
    _text_pdf(folder / "report.pdf")
    _scanned_pdf(folder / "scan.pdf")
    _docx(folder / "annual.docx")
    (folder / "library.html").write_text(HTML, encoding="utf-8")
    _epub(folder / "story.epub")
    _deck(folder / "汇报.pptx")
    _workbook(folder / "预算.xlsx")
    run("kb", "create", "mixed")
    added = run("kb", "add", "mixed", str(folder))
    assert added.count("added ") == 7, added
    docs = run("kb", "docs", "mixed")
    for name in ("report.pdf", "scan.pdf", "annual.docx", "library.html", "story.epub", "汇报.pptx", "预算.xlsx"):
        assert name in docs, (name, docs)

    cases = [  # question, the file's document id, what the location says
        ("图书馆每周二至周日上午几点开馆？", "scan", {"page": 2}),  # read by OCR
        ("馆长表示明年的购书预算是多少？", "report", {"page": 2}),
        ("每位读者一次最多借阅几本书？", "library", {"section": ["社区图书馆", "借阅规则"]}),
        ("图书馆哪一年扩建到三百平方米？", "story", {"section": ["第二章 发展", "扩建"]}),
        ("志愿者由谁统一培训？", "汇报", {"slide": 3}),
        ("合计一栏的备注是什么？", "预算", {"sheet": "预算", "table": 1, "row": 1, "rows": [1, 3]}),
    ]
    for question, doc_id, location in cases:
        hit = top(question)
        assert (hit["doc_id"], hit["location"]) == (doc_id, location), (question, hit)

    run("kb", "remove", "mixed", str(folder / "汇报.pptx"))
    assert top("志愿者由谁统一培训？")["doc_id"] != "汇报"
    assert "汇报.pptx" not in run("kb", "docs", "mixed")
