"""PowerPoint and Excel files, made here with python-pptx and openpyxl, read back with their locations."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rag.chunking import chunk_documents
from rag.corpus import load_documents
from rag.errors import CorpusError
from rag.records import describe_location

pptx = pytest.importorskip("pptx")
openpyxl = pytest.importorskip("openpyxl")


def _deck(path: Path) -> Path:
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    first.shapes.title.text = "一、项目概况"
    first.placeholders[1].text = "星河社区食堂项目于二〇二五年三月开工，\n计划服务老人六百名。"
    second = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    second.shapes.title.text = "二、预算安排"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(1.5)).table
    for r, row in enumerate([["项目", "金额（万元）"], ["厨房设备", "45"], ["场地改造", "80"]]):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    third = deck.slides.add_slide(deck.slide_layouts[5])
    third.shapes.title.text = "三、下一步"
    box = third.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    box.text_frame.text = "六月前招募志愿者三十名。"
    third.notes_slide.notes_text_frame.text = "讲者备注：志愿者由街道统一培训。"
    deck.save(str(path))
    return path


def _workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    budget = book.active
    budget.title = "预算"
    for row in [["项目", "金额（万元）", "备注"], ["厨房设备", 45.0, "含消毒柜"], ["场地改造", 80, None], [None, None, None],
                ["合计", 125, "已批复"]]:
        budget.append(row)
    staff = book.create_sheet("人员")
    staff.append([])
    staff.append(["说明：志愿者名单"])  # a title line above the header is the header here
    staff.append(["姓名", "加入日期"])
    staff.append(["王小明", dt.datetime(2025, 4, 1)])
    book.save(str(path))
    return path


def test_pptx_slides_in_order_with_titles_tables_and_notes(tmp_path: Path) -> None:
    [doc] = load_documents([_deck(tmp_path / "汇报.pptx")])
    assert [loc for _, _, loc in doc.spans] == [
        {"slide": 1}, {"slide": 2}, {"slide": 2, "table": 1, "row": 1}, {"slide": 2, "table": 1, "row": 2}, {"slide": 3}]
    slide1 = doc.text[doc.spans[0][0]:doc.spans[0][1]]
    assert slide1 == "一、项目概况\n星河社区食堂项目于二〇二五年三月开工，\n计划服务老人六百名。"
    # Normalised as all text is: no spaces beside Chinese, Chinese punctuation kept.
    assert "|项目|金额（万元）|\n| --- | --- |\n|厨房设备| 45 |\n|场地改造| 80 |" in doc.text
    assert doc.text.endswith("三、下一步\n六月前招募志愿者三十名。\n讲者备注：志愿者由街道统一培训。")
    chunks = chunk_documents([doc], max_chars=300, overlap_sentences=1)
    table = next(c for c in chunks if "厨房设备" in c.text)
    assert table.location == {"slide": 2, "table": 1, "row": 1, "rows": [1, 2]}
    assert describe_location(table.location) == "第2张幻灯片 · 表1 第1–2行"


def test_xlsx_each_sheet_is_a_table_with_its_header(tmp_path: Path) -> None:
    [doc] = load_documents([_workbook(tmp_path / "预算.xlsx")])
    locations = [loc for _, _, loc in doc.spans]
    assert locations == [{"sheet": "预算", "table": 1, "row": n} for n in (1, 2, 3)] + \
        [{"sheet": "人员", "table": 2, "row": n} for n in (1, 2)]
    budget = doc.text[doc.spans[0][0]:doc.spans[2][1]]
    assert budget == ("|项目|金额（万元）|备注|\n| --- | --- | --- |\n|厨房设备| 45 |含消毒柜|\n"
                      "|场地改造| 80 | |\n|合计| 125 |已批复|")
    assert "|王小明| 2025-04-01 |" in doc.text
    [group] = [c for c in chunk_documents([doc], max_chars=300, overlap_sentences=1) if "合计" in c.text]
    assert describe_location(group.location) == "工作表“预算” · 表1 第1–3行"


@pytest.mark.parametrize("suffix", [".pptx", ".xlsx"])
def test_lying_or_damaged_office_files_are_clear_errors(tmp_path: Path, suffix: str) -> None:
    text = tmp_path / f"notes{suffix}"
    text.write_text("这其实是一个纯文本文件。", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"not a {suffix[1:].upper()} file but plain text"):
        load_documents([text])
    cut = tmp_path / f"cut{suffix}"
    made = _deck(tmp_path / "whole.pptx") if suffix == ".pptx" else _workbook(tmp_path / "whole.xlsx")
    cut.write_bytes(made.read_bytes()[:2000])
    with pytest.raises(CorpusError, match=rf"cut{suffix}"):
        load_documents([cut])


def test_workbook_over_the_row_limit_is_refused(tmp_path: Path, monkeypatch) -> None:
    import rag.readers.sheets as sheets

    monkeypatch.setattr(sheets, "MAX_ROWS", 4)
    with pytest.raises(CorpusError, match="over 4 filled rows"):
        load_documents([_workbook(tmp_path / "big.xlsx")])
