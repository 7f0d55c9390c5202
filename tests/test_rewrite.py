from __future__ import annotations

from rag.rewrite import rewrite_question, subject_of


def test_subject_of_questions() -> None:
    assert subject_of("北京幸福公益基金会的理事长是谁？") == "北京幸福公益基金会"
    assert subject_of("腾讯基金会计划出资多少？") == "腾讯基金会"
    assert subject_of("中国食用菌协会组织龙头企业采购了多少吨湖北滞销香菇？") == "中国食用菌协会"


def test_follow_ups_are_rewritten() -> None:
    history = [("腾讯基金会计划出资多少？", "5000万元[1]。")]
    assert rewrite_question("那它由谁执行？", history) == "腾讯基金会由谁执行？"
    assert rewrite_question("那执行方是谁？", history) == "腾讯基金会执行方是谁？"
    messages = [{"role": "user", "content": "北京幸福公益基金会的理事长是谁？"}, {"role": "assistant", "content": "倪子君[1]。"}]
    assert rewrite_question("她分享了什么？", messages) == "北京幸福公益基金会分享了什么？"


def test_standalone_questions_unchanged() -> None:
    history = [("腾讯基金会计划出资多少？", "5000万元")]
    q = "中国烹饪协会发布了什么倡议？"
    assert rewrite_question(q, history) == q
    assert rewrite_question("那它由谁执行？", []) == "那它由谁执行？"
