"""The answer check (rag/verify) on invented passages and questions."""
from __future__ import annotations

import json
import math

import pytest

from rag.config import AnswerConfig, Config
from rag.errors import ConfigError
from rag.generation import REFUSAL
from rag.verify import AnswerCheck, is_explicit_refusal
from rag.records import Citation
from rag.verify.answerability import FEATURES, MODEL_PATH, TOKEN_SIGNALS, AnswerabilityModel, features, load_model
from rag.verify.fit import C_GRID, CV_TOLERANCE, Row, choose_c, fit, fit_min_evidence, utility

from conftest import passage

# Invented documents: the subject of the first sentence is far from the last one.
ZHANG = passage(1, "张三出生于浙江省温州市，是一名木雕艺人。他后来在上海开了一家工作室。工作室每年举办两次展览。"
                   "李四的家乡是第一大镇，那里盛产竹编。", "张三")
QINGHE = passage(2, "青禾基金会本年度总预算为500万元。共有300名志愿者参与了青禾基金会的助学项目。", "青禾基金会")
PASSAGES = [ZHANG, QINGHE]


@pytest.fixture(scope="module")
def check() -> AnswerCheck:
    return AnswerCheck()


def test_right_answers_are_answered_with_their_quote(check: AnswerCheck) -> None:
    verdict = check.check("张三是哪里人？", "张三出生于浙江省温州市[1]。", PASSAGES)
    assert not verdict.refused and "温州市" in verdict.text and verdict.citations[0].doc_id == "doc-001"
    assert "浙江省温州市" in verdict.citations[0].quote
    money = check.check("青禾基金会的总预算是多少？", "青禾基金会本年度总预算为500万元[2]。", PASSAGES)
    assert not money.refused and "500万元" in money.text


def test_subject_pasted_onto_words_about_something_else_is_refused(check: AnswerCheck) -> None:
    # "第一大镇" is in passage 1, but in a sentence about 李四, two sentences away from 张三.
    verdict = check.check("张三是哪里人？", "张三是第一大镇[1]。", PASSAGES)
    # It aligned; the check refuses it because the quoted sentence and its neighbours share
    # nothing with the question.
    assert verdict.refused and verdict.text == REFUSAL and verdict.reason == "off_question" and verdict.candidate
    right = check.check("张三是哪里人？", "张三出生于浙江省温州市[1]。", PASSAGES)
    assert verdict.score < right.score


def test_a_quote_holding_the_subject_but_not_what_is_asked_is_refused(check: AnswerCheck) -> None:
    # Asked for a telephone number the passages never give: the reader's best sentence and a
    # generator's reply quoting it name 青禾基金会 and hold a number, but nothing of "联系电话".
    question = "青禾基金会的联系电话是多少？"
    assert check.quote(question, PASSAGES) is None
    verdict = check.check(question, "青禾基金会本年度总预算为500万元[2]。", PASSAGES)
    assert verdict.refused and verdict.reason == "score" and verdict.signals["asked_cover"] == 0.0
    assert all(v.signals["asked_cover"] == 0.0 and v.score < check.threshold
               for v in check.candidates(question, "青禾基金会本年度总预算为500万元[2]。", PASSAGES))
    # Asked what the same sentence does say, it answers.
    assert not check.check("青禾基金会本年度总预算是多少？", "青禾基金会本年度总预算为500万元[2]。", PASSAGES).refused


def test_an_amount_of_money_answered_with_a_number_of_people_is_refused(check: AnswerCheck, single_candidate_model) -> None:
    own = check.candidates("青禾基金会的总预算是多少？", "青禾基金会的总预算是300名[2]。", PASSAGES)[0]
    assert own.reason == "type" and own.score == 0.0 and not own.extractive
    assert own.signals["type_known"] == 1.0 and own.signals["type_ok"] == 0.0
    # A check that weighs only the generator's answer refuses...
    single = AnswerCheck(AnswerConfig(model=str(single_candidate_model)))
    verdict = single.check("青禾基金会的总预算是多少？", "青禾基金会的总预算是300名[2]。", PASSAGES)
    assert verdict.refused and verdict.reason == "type"
    # ...and the bundled one answers with the reader's sentence, which holds the amount.
    picked = check.check("青禾基金会的总预算是多少？", "青禾基金会的总预算是300名[2]。", PASSAGES)
    assert not picked.refused and picked.extractive and "500万元" in picked.text and "300名" not in picked.text


def test_the_readers_sentence_answers_when_it_is_more_probably_right(check: AnswerCheck) -> None:
    # A count asked, a place given: the generator's answer fails the type check; the extractive
    # reader's sentence holds the count and is the answer, cited.
    question = "张三的工作室每年举办几次展览？"
    own, reader = check.candidates(question, "张三的工作室在上海[1]。", PASSAGES)
    assert own.reason == "type" and reader.extractive and reader.signals["extractive"] == 1.0 and reader.score > own.score
    verdict = check.check(question, "张三的工作室在上海[1]。", PASSAGES)
    assert not verdict.refused and "两次展览" in verdict.text and verdict.citations[0].doc_id == "doc-001"
    # Where the generator's own answer is right and the reader finds nothing better, it stays.
    right = check.check("张三是哪里人？", "张三出生于浙江省温州市[1]。", PASSAGES)
    assert not right.refused and not right.extractive
    assert check.candidates(question, "张三的工作室在上海[1]。", PASSAGES, reader=False) == [own]


def test_unsupported_and_explicit_refusals(check: AnswerCheck, single_candidate_model) -> None:
    # An invented amount does not align: only the reader's candidate is left.
    invented = check.candidates("青禾基金会的总预算是多少？", "青禾基金会的总预算是800万元[2]。", PASSAGES)
    assert [v.extractive for v in invented] == [True] and "800万元" not in invented[0].text
    alone = AnswerCheck(AnswerConfig(model=str(single_candidate_model))).check("青禾基金会的总预算是多少？", "青禾基金会的总预算是800万元[2]。", PASSAGES)
    assert alone.refused and alone.reason == "unsupported" and not alone.candidate
    assert is_explicit_refusal("根据现有资料无法回答这个问题。") and is_explicit_refusal("  ")
    # An explicit refusal: the reader's sentence is judged twice, as a rescue of the refusal
    # (the refusal is one of its signals) and as the reader's own candidate, which answers
    # where it clears the threshold whatever the generator said.
    question = "青禾基金会本年度总预算为多少？"
    rescue, own = check.candidates(question, REFUSAL, PASSAGES)
    assert rescue.rescued and rescue.signals["explicit_refusal"] == 1.0 and "500万元" in rescue.candidate
    assert own.extractive and not own.rescued and own.signals["explicit_refusal"] == 0.0 and own.text == rescue.text
    answered = check.check(question, REFUSAL, PASSAGES)
    assert not answered.refused and answered.extractive and not answered.rescued and "500万元" in answered.text
    assert check.quote(question, PASSAGES) == answered
    # A check without the reader's signal has only the rescue.
    rescued = AnswerCheck(AnswerConfig(model=str(single_candidate_model))).check(question, REFUSAL, PASSAGES)
    assert rescued.rescued and "500万元" in rescued.candidate and rescued.signals["explicit_refusal"] == 1.0


@pytest.mark.parametrize("reply", ["[2]", "[2]。", " [1][2] ", "。"])
def test_a_reply_of_only_markers_says_nothing_and_gets_the_extractive_try(check: AnswerCheck, reply: str, single_candidate_model) -> None:
    assert is_explicit_refusal(reply)
    rescued = AnswerCheck(AnswerConfig(model=str(single_candidate_model))).check("青禾基金会本年度总预算为多少？", reply, PASSAGES)
    assert rescued.rescued and "500万元" in rescued.candidate
    assert check.candidates("青禾基金会本年度总预算为多少？", reply, PASSAGES)[0].rescued


def test_short_real_answers_are_not_taken_for_refusals() -> None:
    for reply in ("500万元[2]。", "300[2]", "Lin[1]", "是[1]。"):
        assert not is_explicit_refusal(reply), reply


def test_strictness_moves_along_the_curve(check: AnswerCheck) -> None:
    # A weak answer: supported, on the question's sentence, but adding little to it.
    weak = ("张三后来在哪里开了工作室？", "张三后来开了一家工作室[1]。", PASSAGES)
    score = max(v.score for v in check.candidates(*weak))  # the generator's answer or the reader's sentence
    assert 0.0 < score < 1.0
    assert not AnswerCheck(AnswerConfig(strictness=0.0)).check(*weak).refused
    assert not AnswerCheck(AnswerConfig(strictness=score)).check(*weak).refused
    assert AnswerCheck(AnswerConfig(strictness=min(1.0, score + 1e-6))).check(*weak).refused
    assert AnswerCheck(AnswerConfig(strictness=1.0)).check("张三是哪里人？", "张三出生于浙江省温州市[1]。", PASSAGES).refused
    with pytest.raises(ConfigError, match="strictness"):
        AnswerCheck(AnswerConfig(strictness=2.0))
    config = Config.from_dict({"answer": {"strictness": 0.7}})
    assert config.answer.strictness == 0.7 and config.to_dict()["answer"]["strictness"] == 0.7


def test_no_evidence_skips_generation(check: AnswerCheck) -> None:
    assert check.worth_generating("青禾基金会的总预算是多少？", PASSAGES)
    assert not check.worth_generating("火星探测器的发射日期是哪天？", PASSAGES)


def test_bundled_model_is_inspectable_and_fitted() -> None:
    model = load_model()
    assert set(model.features) <= set(FEATURES) and len(model.weights) == len(model.features)
    assert 0.0 < model.threshold < 1.0 and "tune" in model.fitted_on
    # Signals that an answer addresses the question push the score up. (Single weights may not:
    # quote_question and asked_cover overlap, and the fit splits their weight between them.)
    signals = features("张三是哪里人？", PASSAGES, "张三出生于浙江省温州市", AnswerCheck().check("张三是哪里人？", "张三出生于浙江省温州市[1]。", PASSAGES).citations)
    assert model.score(signals) > model.score(signals | {"quote_question": 0.0, "asked_cover": 0.0, "quote_subject": 0.0})
    assert model.score(signals) > model.score(signals | {"align": 0.0})


def test_the_answer_check_fitted_for_the_generator_is_chosen() -> None:
    from rag.answering import Answerer

    default = load_model()
    larger = [AnswerCheck(AnswerConfig(), generator=name).model for name in (
        "Qwen/Qwen2.5-Coder-1.5B-Instruct", "/srv/models/qwen2.5-coder-1.5b-instruct-ct2-int8/", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf")]
    assert all(m == larger[0] != default for m in larger) and "t15-" in larger[0].fitted_on
    assert AnswerCheck(AnswerConfig(), generator="Qwen/Qwen2.5-Coder-0.5B-Instruct").model == default
    assert AnswerCheck(AnswerConfig(), generator="someone/other-model").model == default
    # answer.model, where set, wins over the generator's own fit.
    assert AnswerCheck(AnswerConfig(model=str(MODEL_PATH)), generator="Qwen/Qwen2.5-Coder-1.5B-Instruct").model == default
    generation = Config().with_overrides(generation={"model": "Qwen/Qwen2.5-Coder-1.5B-Instruct"}).generation
    assert Answerer(lambda question, k: [], generation).check.model == larger[0]


def test_bad_model_files_say_how_to_fix(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="answer.model"):
        AnswerCheck(AnswerConfig(model=str(bad)))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": 1, "features": ["evidence", "gut_feeling"], "weights": [1.0, 1.0], "intercept": 0, "threshold": 0.5}))
    with pytest.raises(ConfigError, match="refit"):
        AnswerCheck(AnswerConfig(model=str(other)))


def _rows(corpus: str, n: int) -> list[Row]:
    rows = []
    for i in range(n):
        right = i % 3 != 0
        signals = {name: 0.5 for name in FEATURES if name not in TOKEN_SIGNALS}
        signals["align"] = 0.9 if right else 0.2
        signals["evidence"] = 0.6 if right else 0.1 + 0.001 * i
        rows.append(Row(corpus, answerable=i % 5 != 0 or right, has_candidate=True, right=right, signals=signals))
    return rows


def test_fit_learns_a_separating_signal_and_a_threshold_between() -> None:
    rows = _rows("a", 60) + _rows("b", 30)
    model, summary = fit(rows)
    weights = dict(zip(model.features, model.weights))
    assert weights["align"] > 1.0
    right = model.score(rows[1].signals)
    wrong = model.score(rows[0].signals)
    assert wrong < model.threshold <= right
    a = summary["corpora"]["a"]
    assert a["accuracy"] == a["candidate_accuracy"] and a["refusal_recall"] == 1.0  # every right one answered, no wrong one
    assert fit_min_evidence(rows) == 0.5  # every right candidate has evidence 0.6: the top of the grid
    c, cv = choose_c(rows)
    assert c in C_GRID and set(cv) == set(C_GRID) and cv[c] >= max(cv.values()) - CV_TOLERANCE
    assert all(other > c for other in cv if cv[other] >= max(cv.values()) - CV_TOLERANCE and other != c)  # the most regularised


def test_token_signals_come_from_the_generators_log_probs_and_default_to_their_tune_mean() -> None:
    citations = [Citation(marker=1, doc_id="doc-001", chunk_id="c1", quote="x", start=0, end=1)]
    plain = features("青禾基金会的总预算是多少？", PASSAGES, "300万元", citations)
    assert not set(TOKEN_SIGNALS) & set(plain)  # an engine without log-probs: the signals are absent
    signals = features("青禾基金会的总预算是多少？", PASSAGES, "300万元", citations, token_log_probs=[math.log(0.5), math.log(0.125)])
    assert signals["token_prob"] == pytest.approx(0.25) and signals["min_token_prob"] == pytest.approx(0.125)
    assert signals["first_token_prob"] == pytest.approx(0.5)
    # Rows with and without them (two engines): the fit keeps the signals and scores a row
    # that lacks them with their mean, as the answer check will.
    rows = _rows("a", 60)
    for row in rows[:30]:
        row.signals["token_prob"] = 0.9 if row.right else 0.3
    model, _ = fit(rows)
    assert "token_prob" in model.features and model.defaults["token_prob"] == pytest.approx(
        sum(r.signals["token_prob"] for r in rows[:30]) / 30)
    lacking = {k: v for k, v in rows[40].signals.items() if k != "token_prob"}
    assert model.score(lacking) == model.score(lacking | {"token_prob": model.defaults["token_prob"]})
    assert "token_prob" not in fit(rows, exclude=["token_prob"])[0].features


def test_subject_exact_tells_a_swapped_name_from_the_one_asked_about() -> None:
    # Invented: the passage names 青禾志愿者协会, not 青禾公益基金会, though most bigrams are shared.
    other = passage(1, "青禾志愿者协会的秘书长是王明。协会成立于2015年。", "青禾志愿者协会")
    quote = "青禾志愿者协会的秘书长是王明。"
    cite = [Citation(marker=1, doc_id="doc-001", chunk_id="c1", quote=quote, start=0, end=len(quote))]
    swapped = features("青禾公益基金会的秘书长是谁？", [other], "王明", cite)
    asked = features("青禾志愿者协会的秘书长是谁？", [other], "王明", cite)
    assert asked["subject_exact"] == 1.0
    assert swapped["subject_exact"] == pytest.approx(2 / 7)  # only "青禾" is written out whole


def test_utility_counts_wrong_answers_below_refusals() -> None:
    rows = [Row("a", True, True, False, {}), Row("a", False, True, False, {})]
    assert utility(rows, [True, True]) == -0.5
    assert utility(rows, [False, False]) == 0.5


def test_a_questions_candidates_count_once_as_the_one_the_check_answers_with() -> None:
    from rag.verify.fit import _mean_utility

    # Question q1: a wrong generator answer and a right reader sentence; q2: unanswerable, one candidate.
    rows = [Row("a", True, True, False, {}, group="q1"), Row("a", True, True, True, {"extractive": 1.0}, group="q1"),
            Row("a", False, True, False, {}, group="q2")]
    assert _mean_utility(rows, [0.3, 0.9, 0.2], 0.5) == 1.0  # q1 answered right by the reader, q2 refused
    assert _mean_utility(rows, [0.9, 0.3, 0.2], 0.5) == pytest.approx(0.25)  # q1 answered wrong: (-0.5 + 1) / 2
    ungrouped = [Row(r.corpus, r.answerable, r.has_candidate, r.right, r.signals) for r in rows]
    assert _mean_utility(ungrouped, [0.3, 0.9, 0.2], 0.5) == pytest.approx(2 / 3)  # three questions without groups
    # Cross-validation keeps a question's candidates in one fold: fitted and scored, no error.
    grouped = [Row(r.corpus, r.answerable, r.has_candidate, r.right, r.signals, group=f"q{i // 2}") for i, r in enumerate(_rows("a", 60))]
    c, cv = choose_c(grouped)
    assert c in C_GRID


def test_model_score_is_a_probability() -> None:
    model = AnswerabilityModel(weights=tuple(1.0 for _ in FEATURES), intercept=-100.0, threshold=0.5)
    assert 0.0 <= model.score({name: 1.0 for name in FEATURES}) < 1e-6


def test_an_english_question_weighs_the_generators_answer_alone(check: AnswerCheck) -> None:
    # Character bigrams tell two Chinese sentences apart, not two English ones of one passage.
    en = passage(1, "The Riverside Library opened in 1998. It is run by volunteers.", "Riverside Library")
    question, reply = "Who runs the Riverside Library?", "The Riverside Library is run by volunteers[1]."
    assert [v.extractive for v in check.candidates(question, reply, [en])] == [False]
    assert [v.extractive for v in check.candidates(question, reply, [en], reader=True)] == [False, True]
    zh = check.candidates("张三的工作室每年举办几次展览？", "张三的工作室在上海[1]。", PASSAGES)
    assert [v.extractive for v in zh] == [False, True]


def test_replay_rebuilds_the_passages_the_run_gave_each_question(mini_rag, tmp_path) -> None:
    """A stored run is replayed on the passages it recorded, in its order and with its
    scores, not on what retrieving again returns (another machine may rank differently)."""
    from rag.verify.fit import replay_rows

    chunks = list(mini_rag.indexes[0].chunks)
    food = next(c for c in chunks if "烹饪" in c.text)
    fund = next(c for c in chunks if "腾讯" in c.text)
    question = "腾讯基金会计划出资多少？"
    assert mini_rag.retrieve(question)[0].chunk_id == fund.id  # retrieving again puts the fund first
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"eval": {"index_dir": "unused"}, "rag": {}}), encoding="utf-8")
    item = {"id": "q1", "question": question, "answerable": True, "gold_answers": ["3亿元"],
            "raw": "腾讯基金会计划出资3亿元[2]。", "context": [food.id, fund.id],
            "retrieved": [{"chunk_id": food.id, "score": 0.9, "dense_score": 0.5, "lexical_score": 1.0},
                          {"chunk_id": fund.id, "score": 0.4, "dense_score": 0.8, "lexical_score": 6.0}],
            "metrics": {}, "signals": {}}
    (run / "predictions.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = replay_rows(run, "mini", rag=mini_rag)
    generated = [r for r in rows if not r.signals.get("extractive")]
    assert generated and generated[0].right and generated[0].has_candidate
    assert generated[0].signals["cited_rank"] == pytest.approx(0.5)  # [2]: the fund is second in the run
    # A chunk the index lacks: the run needs its own index.
    item["context"] = ["nowhere#0"]
    (run / "predictions.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="rebuild"):
        replay_rows(run, "mini", rag=mini_rag)
