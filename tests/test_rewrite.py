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


def test_typed_pronoun_picks_matching_subject_and_own_subject_is_kept() -> None:
    history = [("中国医师协会远程医疗队是哪天启动远程会诊的？", "2月27日[1]。")]
    assert rewrite_question("该协会向多少名医师家属发出了慰问信？", history) == "中国医师协会向多少名医师家属发出了慰问信？"
    assert rewrite_question("其智库协作机制由多少家机构发起？", [("中国网络社会组织联合会的会长是谁？", "")]) == (
        "中国网络社会组织联合会智库协作机制由多少家机构发起？"
    )
    assert rewrite_question("那中国食用菌协会呢？", [("中国茶叶流通协会采购了多少春茶？", "")]) == "中国食用菌协会呢？"
    assert subject_of("深圳市猛犸公益基金会捐给雅典大学的设备是什么？") == "深圳市猛犸公益基金会"
