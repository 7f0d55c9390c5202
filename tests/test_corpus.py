from __future__ import annotations

import json
import logging

import pytest

from rag.corpus import alias_map, load_documents, make_title
from rag.errors import CorpusError
from rag.normalize import normalize_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("腾讯 基金会 计划 出资", "腾讯基金会计划出资"),
        ("Hello World 中文 2018 年", "Hello World中文2018年"),
        ("出资 ３ 亿元 ， 用于", "出资3亿元，用于"),
        ("京 鄂 　 ｉ Ｗ ｉ ｌ ｌ 志愿者", "京鄂iWill志愿者"),
        ("“ 心战疫 ” 。 ！ ？ ； ： （ 一 ）", "“心战疫”。！？；：（一）"),
        ("增长 １２．５％", "增长12.5%"),
        ("a\x00b\u200bc\ud800d", "abcd"),
    ],
)
def test_normalize_cases(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected


def test_default_format_ids_headers_and_dedup(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    docs = load_documents(["tests/data/mini.txt"])
    # line 2 -> doc-001; the stray header (doc-004) and the empty line (doc-005) are skipped
    assert [d.id for d in docs] == ["doc-001", "doc-002", "doc-006"]
    assert docs[0].aliases == ("doc-003",)
    assert docs[0].text.startswith("腾讯基金会计划出资3亿元，用于支持")
    assert "京鄂iWill志愿者联合行动" in docs[1].text
    assert "Hello World 2020年" in docs[2].text
    assert alias_map(docs)["doc-003"] == "doc-001"
    assert "repeated header line" in caplog.text


def test_default_corpus_counts() -> None:
    docs = load_documents(["data/articles.txt"])
    assert len(docs) == 86
    assert sum(len(d.aliases) for d in docs) == 135 - 86
    ids = alias_map(docs)
    assert len(ids) == 135 and ids["doc-018"] == "doc-001" and ids["doc-051"] == "doc-001"
    assert "doc-017" not in ids or ids["doc-017"] == "doc-017"  # file line 18 is a header, so doc-017 is skipped
    assert all("，" in d.text for d in docs[:5]) and not any(" 基金会" in d.text for d in docs)


def test_titles_skip_datelines() -> None:
    assert make_title("5月6日，中国烹饪协会发布紧急倡议，要求加强防控。") == "中国烹饪协会发布紧急倡议"
    assert make_title("弘扬抗疫精神，护佑心理健康") == "弘扬抗疫精神"
    assert len(make_title("很" * 100)) == 25


def test_jsonl_csv_md(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x1", "title": "标题", "text": "第一 篇 文档 的 正文 内容 很 长"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("id,text\nc1,第二篇文档的正文内容也很长\n", encoding="utf-8")
    (tmp_path / "c.md").write_text("# 第三篇\n\n这是一篇 Markdown 文档的正文。", encoding="utf-8")
    docs = load_documents([tmp_path])
    assert [(d.id, d.title) for d in docs] == [("x1", "标题"), ("c1", "第二篇文档的正文内容也很长"), ("c", "第三篇")]
    assert docs[0].text == "第一篇文档的正文内容很长"


def test_bad_files_name_the_problem(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好的文档内容很长很长"}\n{not json}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl, line 2"):
        load_documents([bad])
    nocol = tmp_path / "n.csv"
    nocol.write_text("id,body\n1,正文\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no 'text' column"):
        load_documents([nocol])
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\x01\x02PK" * 100)
    with pytest.raises(CorpusError, match="binary"):
        load_documents([binary])
    with pytest.raises(CorpusError, match="does not exist"):
        load_documents([tmp_path / "missing.txt"])


def test_gb18030_file_is_decoded(tmp_path) -> None:
    p = tmp_path / "gbk.txt"
    p.write_bytes("腾讯基金会计划出资三亿元支持抗疫。".encode("gb18030"))
    assert load_documents([p])[0].text == "腾讯基金会计划出资三亿元支持抗疫。"


def test_uploaded_documents_do_not_take_the_base_corpus_ids(mini_rag, tmp_path) -> None:
    """An uploaded file in the articles format numbers its lines doc-001… too; those ids stay the base corpus's."""
    upload = tmp_path / "uploads" / "notes.txt"
    upload.parent.mkdir()
    upload.write_text("正文 内容\n上海 慈善 基金会 为 社区 防控 捐赠 了 二十万 只 口罩 和 一批 防护服 。\n", encoding="utf-8")
    from rag import kb
    from ui.uploads import KB_NAME, UserDocuments

    base_text = next(d.text for d in mini_rag.indexes[0].documents if d.id == "doc-001")
    UserDocuments(mini_rag, tmp_path / "user").add([upload])
    assert [d.doc_id for d in kb.documents(KB_NAME, tmp_path / "user")] == ["notes/doc-001"]
    assert mini_rag.resolve_doc_id("doc-001") == "doc-001"
    assert next(d.text for d in mini_rag.indexes[0].documents if d.id == "doc-001") == base_text
    hits = mini_rag.retrieve("上海慈善基金会捐赠了多少口罩？", top_k=3)
    assert any(p.chunk.doc_id == "notes/doc-001" for p in hits)
