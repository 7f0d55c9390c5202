from __future__ import annotations

import pytest

from rag.config import AnswerConfig
from rag.generation import REFUSAL
from rag.errors import QuestionError
from rag.pipeline import RAG
from rag.records import Answer
from rag.verify import AnswerCheck

from conftest import ScriptedGenerator, install_generator, passage




@pytest.fixture
def rag(mini_rag) -> RAG:
    return mini_rag


def _use(rag: RAG, gen: ScriptedGenerator) -> None:
    install_generator(rag, gen)


def test_supported_answer_gets_verified_citation(rag: RAG) -> None:
    gen = ScriptedGenerator("腾讯基金会计划出资3亿元[2]。")
    _use(rag, gen)
    pieces = list(rag.ask_stream("腾讯基金会计划出资多少？"))
    answer = pieces[-1]
    assert isinstance(answer, Answer)
    assert "".join(p for p in pieces[:-1]) == "腾讯基金会计划出资3亿元[2]。"
    assert not answer.refused and "3亿元" in answer.text
    c = answer.citations[0]
    assert answer.passages[c.marker - 1].doc_id == "doc-001" and f"[{c.marker}]" in answer.text
    assert answer.passages[c.marker - 1].text[c.start : c.end] == c.quote
    assert {"retrieve_ms", "generate_ms", "total_ms", "first_token_ms"} <= set(answer.timings)


def test_hallucinated_answer_is_never_shown_and_passages_are_kept(rag: RAG, monkeypatch, single_candidate_model) -> None:
    _use(rag, ScriptedGenerator("腾讯基金会计划出资8亿元。", "腾讯基金会计划出资8亿元。"))
    answer = rag.ask("腾讯基金会计划出资多少？")
    # The invented amount does not align; the extractive reader's sentence answers instead, cited.
    assert "8亿元" not in answer.text and "8亿元" not in answer.candidate
    assert not answer.refused and "3亿元" in answer.text and answer.citations[0].doc_id == "doc-001"
    assert answer.passages and answer.passages[0].doc_id == "doc-001"
    # A check that weighs the generator's answer alone (no reader signal) refuses it.
    monkeypatch.setattr(rag.answerer, "check", AnswerCheck(AnswerConfig(model=str(single_candidate_model))))
    alone = rag.ask("腾讯基金会计划出资多少？")
    assert alone.refused and alone.text == REFUSAL and alone.citations == () and alone.passages


def test_explicit_refusal_of_answerable_question_is_answered_extractively(rag: RAG, monkeypatch, single_candidate_model) -> None:
    _use(rag, ScriptedGenerator("根据现有资料无法回答这个问题。", "根据现有资料无法回答这个问题。"))
    answer = rag.ask("腾讯基金会计划出资多少？")
    assert not answer.refused and "3亿元" in answer.text and answer.signals["extractive"] == 1.0
    assert answer.citations[0].doc_id == "doc-001"
    # A check without the reader's candidate rescues the refusal with the same sentence.
    monkeypatch.setattr(rag.answerer, "check", AnswerCheck(AnswerConfig(model=str(single_candidate_model))))
    rescued = rag.ask("腾讯基金会计划出资多少？")
    assert not rescued.refused and rescued.text == answer.text and rescued.timings["rescued"] == 1


def test_quote_first_answers_without_generating_what_the_check_would_answer(mini_rag: RAG) -> None:
    from rag.config import Config
    from rag.pipeline import RAG as Pipeline

    assert Config().answer.quote_first  # the default
    config = mini_rag.config.with_overrides(answer={"quote_first": True})
    rag = Pipeline(mini_rag.indexes, config, embedder=mini_rag.embedder)
    gen = ScriptedGenerator("腾讯基金会计划出资8亿元[1]。", "根据现有资料无法回答这个问题。")
    _use(rag, gen)
    pieces = list(rag.ask_stream("腾讯基金会计划出资多少？"))
    answer = pieces[-1]
    assert not gen.prompts and answer.timings["quoted"] == 1 and answer.raw == ""
    assert pieces[:-1] == [answer.text] and "3亿元" in answer.text and answer.citations[0].doc_id == "doc-001"
    # The same answer the check gives once the generator has replied, whatever the reply.
    check = rag.answerer.check
    for reply in ("腾讯基金会计划出资8亿元[1]。", "根据现有资料无法回答这个问题。", "腾讯基金会计划出资3亿元[1]。"):
        verdict = check.check("腾讯基金会计划出资多少？", reply, answer.passages)
        assert (verdict.text, verdict.citations, verdict.score) == (answer.text, answer.citations, answer.score)
    # A near miss (the passage names the association, not its 会长): the reader's sentence
    # does not clear the check on its own, so the generator is asked. (The nearer miss
    # "北京幸福公益基金会的秘书长是谁？", whose passage names the 理事长, scores just over the
    # threshold of the check refitted once reader sentences kept brackets whole: 0.419 against 0.413.)
    near_miss = rag.ask("中国烹饪协会的会长是谁？")
    assert gen.prompts and "quoted" not in near_miss.timings and near_miss.refused


def test_model_refusal_is_kept_when_no_passage_has_the_asked_type(rag: RAG) -> None:
    gen = ScriptedGenerator("根据现有资料无法回答这个问题。")
    _use(rag, gen)
    answer = rag.ask("腾讯基金会计划出资是在哪一年？")
    assert gen.questions  # the model was asked: evidence was strong enough
    # The extractive second try finds 3亿元, not a year: the answer check refuses it.
    assert answer.refused and answer.refusal_reason == "type" and "3亿元" in answer.candidate


def test_date_cited_from_a_sentence_about_another_event_is_refused() -> None:
    from rag.answering import Answerer
    from rag.config import AnswerConfig, GenerationConfig

    # Invented: the cited sentence has the team's name and a date, but dates a flood, not a founding.
    docs = [passage(1, "2015年7月，青禾县发生洪水，青禾救援队参与了现场救援。2021年3月，青禾救援队发起植树行动。",
                    "青禾救援队")]

    def ask(question: str, reply: str, answer: AnswerConfig | None = None) -> Answer:
        answerer = Answerer(lambda q, k: docs, GenerationConfig(), answer)
        answerer._generators[("causal", GenerationConfig().model)] = ScriptedGenerator(reply)
        return answerer.ask(question)

    assert ask("青禾救援队是哪一年成立的？", "青禾救援队于2015年7月成立[1]。").refused
    answer = ask("青禾救援队是哪一年发起植树行动的？", "青禾救援队于2021年3月发起植树行动[1]。")
    assert not answer.refused and "2021年3月" in answer.text and answer.citations[0].doc_id == "doc-001"
    anything = ask("青禾救援队是哪一年成立的？", "青禾救援队于2015年7月成立[1]。", AnswerConfig(strictness=0.0))
    assert not anything.refused  # the citation aligns: only the calibrated score refuses it


def test_question_without_evidence_is_refused_without_model_call(rag: RAG) -> None:
    gen = ScriptedGenerator("不应被调用")
    _use(rag, gen)
    answer = rag.ask("火星探测器的发射日期是哪天？")
    assert answer.refused and gen.questions == []


def test_empty_and_long_questions_raise_before_any_model_call(rag: RAG) -> None:
    gen = ScriptedGenerator()
    _use(rag, gen)
    with pytest.raises(QuestionError, match="empty"):
        rag.ask("   \n ")
    with pytest.raises(QuestionError, match="limit is 500"):
        rag.ask("问" * 501)
    assert gen.questions == []


def test_follow_up_uses_history(rag: RAG) -> None:
    gen = ScriptedGenerator("倪子君介绍了“京鄂iWill志愿者联合行动”[1]。")
    _use(rag, gen)
    answer = rag.ask("她介绍了什么？", history=[("北京幸福公益基金会的理事长是谁？", "倪子君[1]。")])
    assert gen.questions == ["北京幸福公益基金会介绍了什么？"]
    assert answer.standalone_question == "北京幸福公益基金会介绍了什么？" and not answer.refused
    assert answer.citations and {c.doc_id for c in answer.citations} == {"doc-002"}


def test_extractive_backend_answers_without_a_model(rag: RAG) -> None:
    answer = rag.ask("腾讯基金会计划出资多少？", backend="extractive")
    assert not answer.refused and "3亿元" in answer.text and answer.citations


def test_a_wrong_setting_stops_with_its_message_instead_of_falling_back(rag: RAG) -> None:
    """A typo in generation.engine is a ConfigError for the user to fix, not an extractive answer."""
    from rag.errors import ConfigError

    rag.answerer.config.engine = "ctranslat2"
    with pytest.raises(ConfigError, match="unknown generation engine 'ctranslat2'"):
        rag.ask("腾讯基金会计划出资多少？", backend="causal")


def test_a_model_that_cannot_load_falls_back_with_a_notice(rag: RAG, tmp_path) -> None:
    rag.answerer.config.model = str(tmp_path / "no-such-model")
    answer = rag.ask("腾讯基金会计划出资多少？", backend="causal")
    assert answer.backend == "extractive" and "生成模型无法加载" in answer.notice
    assert "3亿元" in answer.text and answer.citations
