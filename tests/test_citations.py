from __future__ import annotations

from rag.verify.align import key_tokens, render, split_answer, verify_answer
from rag.records import Chunk, Passage


def _p(i: int, text: str, doc: str = "doc-001") -> Passage:
    return Passage(chunk=Chunk(id=f"{doc}#{i}", doc_id=doc, text=text, start=0, end=len(text), title="t"), score=1.0 - i / 10)


PASSAGES = [
    _p(0, "民政部与腾讯基金会联合启动关爱保障行动。腾讯基金会为该行动提供资金支持。"),
    _p(1, "项目由民政部指导，腾讯基金会计划出资5000万元，湖北省慈善总会具体执行。", "doc-002"),
]


def test_split_answer_reads_model_markers() -> None:
    assert split_answer("腾讯基金会计划出资5000万元[2]。由湖北省慈善总会执行【1】。") == [
        ("腾讯基金会计划出资5000万元。", [2]),
        ("由湖北省慈善总会执行。", [1]),
    ]


def test_wrong_marker_is_corrected_and_quote_is_exact() -> None:
    aligned = verify_answer("腾讯基金会计划出资5000万元[1]。", PASSAGES)
    c = aligned[0].citation
    assert c is not None and c.marker == 2 and c.doc_id == "doc-002"
    assert PASSAGES[1].text[c.start : c.end] == c.quote
    assert "5000万元" in c.quote
    text, cites = render(aligned)
    assert text == "腾讯基金会计划出资5000万元[2]。" and cites == (c,)


def test_invented_number_is_unsupported() -> None:
    aligned = verify_answer("腾讯基金会计划出资3000万元。", PASSAGES)
    assert aligned[0].citation is None and aligned[0].missing_tokens == ("3000",)
    assert render(aligned) == ("", ())


def test_unrelated_sentence_dropped_supported_kept() -> None:
    aligned = verify_answer("腾讯基金会提供资金支持。北京烹饪协会会长是李晓明。", PASSAGES)
    assert [a.supported for a in aligned] == [True, False]
    text, cites = render(aligned)
    assert text == "腾讯基金会提供资金支持[1]。" and cites[0].marker == 1


def test_key_tokens() -> None:
    assert key_tokens("出资5000万元，共3.5亿，COVID-19") == ["5000", "3.5", "covid-19"]


def test_answer_restating_the_question_gets_no_citation() -> None:
    q = "腾讯基金会为该行动提供什么？"
    aligned = verify_answer("根据资料，腾讯基金会为该行动提供。", PASSAGES, question=q)
    assert not aligned[0].supported
    aligned = verify_answer("根据资料，腾讯基金会为该行动提供资金支持。", PASSAGES, question=q)
    assert aligned[0].supported and aligned[0].sentence == "腾讯基金会为该行动提供资金支持。"
