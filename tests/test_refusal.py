from __future__ import annotations

import pytest

from rag.verify.checks import answer_has_expected_type, asked_event, event_mentioned


@pytest.mark.parametrize(
    "question, answer, ok",
    [
        ("北京幸福公益基金会是哪一年成立的？", "该基金会成立于2009年。", True),
        ("北京幸福公益基金会是哪一年成立的？", "该基金会分享了经验。", False),
        ("京鄂iWill联合行动是哪天凌晨开始行动的？", "1月23号凌晨开始行动。", True),
        ("京鄂iWill联合行动是哪天开始的？", "很早就开始了。", False),
        ("中国食用菌协会采购了多少吨香菇？", "采购了1400多吨。", True),
        ("组织了多少辆救护车？", "组织了7辆救护车。", True),
        ("组织了多少辆救护车？", "组织了救护车支援。", False),
        ("共有多少名用户参与？", "共有3万人参与。", True),  # 名 and 人 count the same things
        ("共有多少名用户参与？", "共有3万次访问。", False),
        ("总预算是多少？", "总预算是300名。", False),
        ("总预算是多少？", "总预算是300万元。", True),
        ("项目投入了多少资金？", "投入资金1.5亿。", True),
        ("张三是哪里人？", "张三是浙江省温州市人。", True),
        ("谁是总导演？", "总导演由剧组决定。", False),
        ("谁是总导演？", "总导演是李四。", True),
        ("联合倡议叫什么名字？", "倡议名为“携手抗疫·成就无悔青春”。", True),
        ("接触者追踪计算框架叫什么名字？", "框架叫“接触者追踪计算框架”。", False),
        ("接触者追踪计算框架叫什么名字？", "框架叫《接触者追踪计算框架》。", False),
        ("测试公司的吉祥物名叫什么？", "吉祥物名叫小蓝鲸。", True),
        ("理事长是谁？", "倪子君。", True),
    ],
)
def test_answer_type(question: str, answer: str, ok: bool) -> None:
    assert answer_has_expected_type(question, answer) is ok


@pytest.mark.parametrize(
    "question, event",
    [
        ("甘肃蓝天救援队是哪一年成立的？", "成立"),
        ("北京幸福公益基金会成立于哪一年？", "成立"),
        ("视频研讨会是哪天举行的？", "举行"),
        ("新疆生产建设兵团民政局是哪天发布《工作方案》的？", "发布"),
        ("腾讯基金会计划出资多少？", ""),  # not a date question
        ("理事长是哪一年？", ""),  # no verb to check
    ],
)
def test_asked_event(question: str, event: str) -> None:
    assert asked_event(question) == event


def test_date_must_come_from_a_sentence_about_the_asked_event() -> None:
    question = "甘肃蓝天救援队是哪一年成立的？"
    # dev q0095, answered by llama.cpp from a sentence dating a mudslide:
    mudslide = "2012年5月，我的家乡岷县发生泥石流灾害，当时我作为一名志愿者协助蓝天救援队队员开展现场救援。"
    assert not event_mentioned(question, [mudslide])
    assert event_mentioned(question, ["甘肃蓝天救援队成立于2009年。"])
    assert event_mentioned(question, ["甘肃蓝天救援队2009年组建。"])  # a synonym
    assert event_mentioned("京鄂联合行动是哪天凌晨开始行动的？", ["在1月23号凌晨即开展行动。"])  # a shared character
    assert event_mentioned("腾讯基金会计划出资多少？", [mudslide])  # only date questions are checked
