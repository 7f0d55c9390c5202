from __future__ import annotations

import pytest

from rag.refusal import answer_has_expected_type


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
        ("共有多少名用户参与？", "共有3万人参与。", False),
        ("联合倡议叫什么名字？", "倡议名为“携手抗疫·成就无悔青春”。", True),
        ("接触者追踪计算框架叫什么名字？", "框架叫“接触者追踪计算框架”。", False),
        ("接触者追踪计算框架叫什么名字？", "框架叫《接触者追踪计算框架》。", False),
        ("测试公司的吉祥物名叫什么？", "吉祥物名叫小蓝鲸。", True),
        ("理事长是谁？", "倪子君。", True),
    ],
)
def test_answer_type(question: str, answer: str, ok: bool) -> None:
    assert answer_has_expected_type(question, answer) is ok
