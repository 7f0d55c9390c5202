from __future__ import annotations

import pytest
from conftest import TINY_TEXT, passage

from rag.errors import ConfigError, ModelError, QuestionError
from rag.generation import (
    PROMPT_VERSION,
    REFUSAL,
    ExtractiveGenerator,
    Generator,
    PromptSettings,
    build_generator,
    build_messages,
    focus,
    format_passages,
)
from rag.records import Passage

TENCENT = (
    "2021年4月，腾讯宣布投入500亿元用于可持续社会价值创新。"
    "同年，腾讯基金会计划出资3亿元，设立“新基石研究员项目”。"
    "该项目在未来十年内支持一批杰出科学家潜心基础研究。"
)
WEATHER = "北京今天晴，最高气温25度。北京明天有小雨，气温下降。"


@pytest.fixture
def passages() -> list[Passage]:
    return [passage(1, TENCENT, "腾讯基金会"), passage(2, WEATHER, "天气")]


# --- prompt -----------------------------------------------------------------


def test_prompt_numbers_passages_with_titles(passages):
    messages = build_messages("腾讯基金会计划出资多少？", passages)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert REFUSAL in messages[0]["content"] and "[编号]" in messages[0]["content"]
    user = messages[1]["content"]
    assert f"[1] 《腾讯基金会》 {TENCENT}" in user
    assert f"[2] 《天气》 {WEATHER}" in user
    assert user.endswith("问题：腾讯基金会计划出资多少？")
    assert PROMPT_VERSION


def test_prompt_truncates_to_char_budget():
    long = [passage(i, "甲" * 300) for i in range(1, 6)]
    text = format_passages(long, max_chars=450)
    lines = text.split("\n")
    assert [line[:4] for line in lines] == ["[1] ", "[2] "]
    assert lines[1].endswith("…")
    assert sum(len(line) - 4 for line in lines) == 450
    assert format_passages([], 100) == "（无）"


def test_prompt_focus_keeps_the_question_sentence_and_its_neighbours():
    # Invented article: the asked sentence sits in the middle of unrelated ones.
    sentences = ["青禾社区位于城东。", "社区有三个公园。", "青禾图书馆由志愿者管理。", "馆长是林晓。", "每周六有读书会。",
                 "附近有一所小学。", "公交站在路口。"]
    text = "".join(sentences)
    focused = focus("青禾图书馆由谁管理？", text, 30)
    assert "青禾图书馆由志愿者管理。" in focused and "馆长是林晓。" in focused  # the sentence and the next one
    assert "公交站在路口" not in focused and len(focused) <= 30 + 4
    assert focused.startswith("…") and focused.endswith("…")  # cut on both sides, marked
    # A short passage, or no focus, is shown whole.
    assert focus("青禾图书馆由谁管理？", text, 0) == text
    assert focus("青禾图书馆由谁管理？", text, len(text)) == text
    messages = build_messages("青禾图书馆由谁管理？", [passage(1, text, "青禾")], focus_chars=30)
    assert "[1] 《青禾》 …" in messages[1]["content"] and "公交站" not in messages[1]["content"]
    # focus_from=2: the top passage is shown whole and only the ones below it are cut.
    two = [passage(1, text, "青禾"), passage(2, text, "青禾二")]
    user = build_messages("青禾图书馆由谁管理？", two, focus_chars=30, focus_from=2)[1]["content"]
    assert f"[1] 《青禾》 {text}" in user and "[2] 《青禾二》 …" in user and user.count("公交站") == 1


def test_the_prompt_settings_reach_the_generator_through_the_config(monkeypatch):
    import rag.answering as answering
    from rag.config import Config

    config = Config().with_overrides(generation={"model": "", "prompt_focus": 30, "prompt_focus_from": 2, "prompt_passages": 4,
                                                 "prompt_style": "quote"})
    seen = {}

    def fake_build(backend, model=None, **kwargs):
        seen.update(kwargs)
        return ExtractiveGenerator()

    monkeypatch.setattr(answering, "build_generator", fake_build)
    answering.Answerer(lambda question, k: [], config.generation).generator("causal")
    assert seen["prompt"] == PromptSettings(passages=4, focus=30, focus_from=2, style="quote")


def test_prompt_style_picks_the_instruction_and_rejects_unknown_styles(passages):
    quote = build_messages("腾讯基金会计划出资多少？", passages, style="quote")[0]["content"]
    short = build_messages("腾讯基金会计划出资多少？", passages)[0]["content"]
    assert "原话" in quote and "原话" not in short and REFUSAL in quote
    with pytest.raises(ConfigError, match="prompt_style"):
        PromptSettings(style="verbatim")


def test_a_table_row_group_is_shown_with_its_header_row():
    from rag.records import Chunk

    header = "| 项目 | 金额 |\n| --- | --- |"
    rows = "| 图书 | 3万元 |\n| 设备 | 5万元 |"
    chunk = Chunk("c1", "doc-001", rows, 100, 100 + len(rows), "预算", context=f"二、预算安排\n{header}",
                  location={"table": 1, "row": 13, "rows": [13, 14]})
    user = build_messages("设备的金额是多少？", [Passage(chunk, score=1.0)])[1]["content"]
    assert f"{header}\n{rows}" in user  # rows stay on their lines, under the header


# --- extractive -----------------------------------------------------------------


def test_extractive_quotes_answer_sentence(passages):
    generator = build_generator("extractive")
    answer = generator.generate("腾讯基金会计划出资多少设立新基石研究员项目？", passages)
    assert answer == "同年，腾讯基金会计划出资3亿元，设立“新基石研究员项目”[1]。"


def test_extractive_cites_the_passage_it_quotes(passages):
    answer = ExtractiveGenerator().generate("北京明天天气怎么样？", passages)
    assert answer == "北京明天有小雨，气温下降[2]。"
    assert "".join(ExtractiveGenerator().stream("北京明天天气怎么样？", passages)) == answer


def test_extractive_quotes_one_english_sentence_and_keeps_decimals_whole():
    from conftest import passage

    library = passage(1, "The Riverside Library opened in 1998. It is run by volunteers. It holds 3.5 million books.")
    # One sentence, not the whole passage; the marker goes before the full stop.
    assert ExtractiveGenerator().generate("When did the Riverside Library open?", [library]) == (
        "The Riverside Library opened in 1998[1].")
    assert ExtractiveGenerator().generate("How many million books does it hold?", [library]) == (
        "It holds 3.5 million books[1].")


def test_reader_sentences_keep_initials_brackets_and_closing_quotes_whole():
    """Invented text: an initial's full stop, a semicolon inside brackets and a closing
    quote do not cut a sentence; a bracket that never closes runs on only so far."""
    from rag.generation.extractive import sentences

    assert sentences("该项目由Andrew W. Mellon基金会资助。它始于2002年。") == [
        "该项目由Andrew W. Mellon基金会资助。", "它始于2002年。"]
    assert sentences("白松（学名：X；英语：white pine），是松科的一种。树高可达40米。") == [
        "白松（学名：X；英语：white pine），是松科的一种。", "树高可达40米。"]
    assert sentences("他说：“我们到了。”随后离开。It is open. It holds 3.5 million books.") == [
        "他说：“我们到了。”", "随后离开。", "It is open.", "It holds 3.5 million books."]
    unclosed = sentences("注释（未闭合；" + "长" * 200 + "。第二句。第三句。")
    assert unclosed[-2:] == ["第二句。", "第三句。"] and len(unclosed) == 3


def test_extractive_prefers_the_sentence_holding_what_is_asked():
    """Invented passages where the sentence sharing most of the question's words is not the
    answer: the reader's fitted ranking (rag/generation/reader.json) picks the one that is."""
    from conftest import passage

    # A count asked: the sentence with the number, not the one repeating the question.
    school = passage(1, "青禾基金会去年资助学校的消息引起了各方关注。该基金会去年共资助了12所乡村学校，惠及三千名学生。")
    assert ExtractiveGenerator().generate("青禾基金会去年资助了多少所学校？", [school]) == (
        "该基金会去年共资助了12所乡村学校，惠及三千名学生[1]。")
    # The article names its subject once (title, first sentence); the answer says "牠们".
    pangolin = passage(1, "马来穿山甲是穿山甲科的一种动物，分布于东南亚。牠们体长约65厘米，尾长约55厘米。", title="马来穿山甲")
    assert ExtractiveGenerator().generate("马来穿山甲的体长约多少？", [pangolin]) == "牠们体长约65厘米，尾长约55厘米[1]。"


def test_reader_weights_that_do_not_fit_its_signals_are_refused(tmp_path):
    from rag.errors import ConfigError

    bad = tmp_path / "reader.json"
    bad.write_text('{"version": 1, "signals": ["cover", "colour"], "weights": [1.0, 2.0]}', encoding="utf-8")
    with pytest.raises(ConfigError, match="reader_fit.py"):
        ExtractiveGenerator(reader=str(bad))
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        ExtractiveGenerator(reader=str(bad))


def test_extractive_refuses_without_overlap(passages):
    assert ExtractiveGenerator().generate("上海的人口有多少？", passages) == REFUSAL
    assert ExtractiveGenerator().generate("任何问题", []) == REFUSAL


def test_extractive_has_no_free_form(passages):
    generator = ExtractiveGenerator()
    assert generator.free_form is False
    with pytest.raises(ModelError, match="free-form"):
        generator.complete([{"role": "user", "content": "改写问题"}])


# --- factory ---------------------------------------------------------------------


def test_build_generator_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="unknown generation backend"):
        build_generator("gpt")
    with pytest.raises(ConfigError, match="needs a model"):
        build_generator("seq2seq", None)
    with pytest.raises(ConfigError, match="bad option"):
        build_generator("extractive", None, temperature=0.3)
    with pytest.raises(ModelError, match="cannot load seq2seq model"):
        build_generator("seq2seq", str(tmp_path))  # an empty folder holds no model


# --- prompt lookup decoding (generation.prompt_lookup) ---------------------------------------


class _Passes:
    """Counts a model's forward passes and the tokens each one was given."""

    def __init__(self, model) -> None:
        self.lengths: list[int] = []
        self._hook = model.register_forward_hook(lambda module, args, kwargs, output: self.lengths.append(
            kwargs["input_ids"].shape[1]), with_kwargs=True)

    def __enter__(self) -> _Passes:
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()


def test_prompt_lookup_keeps_greedy_answers(tiny_qwen):
    docs = [passage(1, TINY_TEXT, "腾讯")]
    plain = build_generator("causal", str(tiny_qwen), engine="transformers", dtype="float32", max_new_tokens=40,
                            prompt_lookup=0)
    lookup = build_generator("causal", str(tiny_qwen), engine="transformers", dtype="float32", max_new_tokens=40,
                             prompt_lookup=6)
    for question in ("腾讯基金会计划出资多少？", "北京明天天气如何？", "资料"):
        with _Passes(plain.model) as passes:
            expected = plain.generate(question, docs)
        assert len(passes.lengths) > 1 and max(passes.lengths[1:]) == 1  # one token a step
        with _Passes(lookup.model) as drafted:
            assert lookup.generate(question, docs) == expected
        # The random model repeats prompt tokens, so drafts are found, checked several at a time and accepted.
        assert max(drafted.lengths[1:]) > 1 and len(drafted.lengths) < len(passes.lengths)
        assert "".join(lookup.stream(question, docs)).strip() == expected


@pytest.mark.timeout(120)  # a tiny random model: closing the stream must end decoding, not hang the run
def test_prompt_lookup_stream_closed_early_stops_decoding(tiny_qwen):
    docs = [passage(1, TINY_TEXT, "腾讯")]
    generator = build_generator("causal", str(tiny_qwen), engine="transformers", dtype="float32", max_new_tokens=200,
                                prompt_lookup=6)
    with _Passes(generator.model) as full:
        generator.generate("资料", docs)
    with _Passes(generator.model) as closed:
        pieces = generator.stream("资料", docs)
        next(pieces)
        pieces.close()  # must not hang, and the drafting loop must see the cancel flag
    assert len(closed.lengths) < len(full.lengths) / 2, (len(closed.lengths), len(full.lengths))


def test_prompt_lookup_must_be_a_small_whole_number(tiny_qwen):
    for bad in (-1, 2.5, True, "6", 1000):
        with pytest.raises(ConfigError, match="generation.prompt_lookup"):
            build_generator("causal", str(tiny_qwen), engine="transformers", prompt_lookup=bad)


# --- seq2seq with a tiny T5 built offline -------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.decoder = decoders.Fuse()  # Chinese pieces join without spaces
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    backend.train_from_iterator([TENCENT, WEATHER, REFUSAL, "资料：问题：只根据资料简短回答"], trainer)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2,
        num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    path = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_seq2seq_generates_deterministic_bounded_text(tiny_t5, passages):
    generator = build_generator("seq2seq", tiny_t5, max_new_tokens=12)
    assert isinstance(generator, Generator) and generator.backend == "seq2seq"
    first = generator.generate("腾讯基金会计划出资多少？", passages)
    assert isinstance(first, str) and first
    assert "<pad>" not in first and "</s>" not in first
    n_tokens = len(generator.tokenizer(first, add_special_tokens=False)["input_ids"])
    assert n_tokens <= 12
    assert generator.generate("腾讯基金会计划出资多少？", passages) == first
    assert "".join(generator.stream("腾讯基金会计划出资多少？", passages)) == first


def test_seq2seq_complete_follows_free_form_messages(tiny_t5):
    generator = build_generator("seq2seq", tiny_t5, max_new_tokens=5)
    reply = generator.complete([{"role": "user", "content": "北京明天天气"}])
    assert isinstance(reply, str) and generator.free_form


def test_prompt_shrinks_to_fit_model_context(tiny_t5):
    generator = build_generator("seq2seq", tiny_t5, max_new_tokens=4, max_input_tokens=300)
    many = [passage(i, TENCENT * 3, "腾讯") for i in range(1, 6)]
    messages = generator.messages("腾讯基金会计划出资多少？", many)
    assert generator._encode(messages)["input_ids"].shape[1] <= 300
    assert "[1] 《腾讯》" in messages[1]["content"]
    with pytest.raises(QuestionError, match="shorten"):
        generator.complete([{"role": "user", "content": "问" * 400}])


@pytest.mark.timeout(120)  # a tiny random model: closing the stream must end decoding, not hang the run
def test_stream_stopped_early_ends_decoding(tiny_t5, passages):
    generator = build_generator("seq2seq", tiny_t5, max_new_tokens=50)
    pieces = generator.stream("腾讯基金会计划出资多少？", passages)
    next(pieces)
    pieces.close()  # must not hang: the worker thread sees the cancel flag


# --- the real Qwen2.5-Coder-0.5B, provisioned from PyPI ----------------------------------
# The 4-bit 0.5B model is sensitive to wording: these texts are ones it answers
# and refuses correctly with PROMPT_VERSION "zh-3" under greedy decoding.
QWEN_DOCS = [
    passage(1, "2021年4月，腾讯宣布投入500亿元用于可持续社会价值创新。同年，腾讯基金会计划出资3亿元，"
               "设立“新基石研究员项目”，在未来十年内支持一批杰出科学家潜心基础研究。", "腾讯基金会"),
    passage(2, "北京今天晴，最高气温25度。明天有小雨。", "天气"),
]


@pytest.fixture(scope="module")
def qwen():
    return build_generator("causal", None, max_new_tokens=48)


@pytest.mark.slow
def test_qwen_answers_with_the_number_and_streams_the_same_text(qwen):
    question = "腾讯基金会计划出资多少设立新基石研究员项目？"
    answer = qwen.generate(question, QWEN_DOCS)
    assert "3亿" in answer
    assert "<|im_end|>" not in answer and "资料：" not in answer and "问题：" not in answer
    assert "".join(qwen.stream(question, QWEN_DOCS)).strip() == answer


@pytest.mark.slow
def test_qwen_prompt_lookup_accepts_drafts_copied_from_the_passage(qwen):
    question = "腾讯基金会计划出资多少设立新基石研究员项目？"
    assert qwen.prompt_lookup > 0  # the default
    with _Passes(qwen.model) as passes:
        answer = qwen.generate(question, QWEN_DOCS)
    tokens = len(qwen.tokenizer(answer)["input_ids"])
    # After the prompt, each pass checks a draft: fewer passes than answer tokens means drafts were accepted.
    assert "3亿" in answer and len(passes.lengths) - 1 < tokens * 0.8, (answer, passes.lengths)
    assert max(passes.lengths[1:]) > 1


@pytest.mark.slow
def test_qwen_refuses_when_passages_lack_the_answer(qwen):
    assert qwen.generate("上海的人口是多少？", QWEN_DOCS) == REFUSAL


def test_traditional_characters_are_read_as_simplified_ones():
    """Invented text in traditional characters: the question words, answer types and bigrams
    are matched as in simplified text, and the quote keeps the document's own characters."""
    from rag.normalize import fold_script
    from rag.textsim import bigrams, question_core
    from rag.verify.checks import answer_has_expected_type, expected_type

    assert fold_script("為什麼黃蟬的別稱叫什麼？") == "为什么黄蝉的别称叫什么？"
    assert fold_script("腾讯基金会 ABC 123") == "腾讯基金会 ABC 123"  # simplified text is left alone
    # Simplified characters are never folded, so the simplified patterns still match a folded
    # question ("么" is also a traditional variant of 幺: folding it broke every "什么").
    import re

    import rag.rewrite
    import rag.textsim
    import rag.verify.checks
    patterns = [v.pattern for m in (rag.textsim, rag.verify.checks, rag.rewrite) for v in vars(m).values() if isinstance(v, re.Pattern)]
    patterns += list(rag.rewrite._QUESTION_WORDS)
    assert len(patterns) > 20 and all(fold_script(p) == p for p in patterns)
    assert fold_script("什么为什么") == "什么为什么"
    assert question_core("黃蟬的別稱叫什麼？") == "黄蝉的别称叫？"
    assert bigrams("青禾基金會") == bigrams("青禾基金会")  # either script matches the other
    assert expected_type("青禾基金會的理事長是誰？") == "person"
    assert expected_type("青禾基金會去年資助了多少所學校？") == "count"
    assert answer_has_expected_type("青禾基金會去年資助了多少所學校？", "該基金會去年共資助了12所鄉村學校。")
    school = passage(1, "青禾基金會去年資助學校的消息引起了各方關注。該基金會去年共資助了12所鄉村學校，惠及三千名學生。")
    assert ExtractiveGenerator().generate("青禾基金會去年資助了多少所學校？", [school]) == (
        "該基金會去年共資助了12所鄉村學校，惠及三千名學生[1]。")
