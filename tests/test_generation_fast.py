"""The CTranslate2 engine of the causal backend: conversion cache, fallbacks, streaming, real answers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_TEXT as TEXT
from conftest import dev_gold_case, passage

from rag.errors import ConfigError, ModelError
from rag.generation import REFUSAL, PromptSettings, build_generator

pytest.importorskip("ctranslate2")
from rag.generation.ct2 import CTranslate2Generator  # noqa: E402
from rag.provision import ct2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_conversion_is_cached_and_reused(tiny_qwen, cache, monkeypatch):
    path = ct2.ensure_ct2_model(tiny_qwen, "int8")
    assert path == cache / "models" / "tiny-qwen-ct2-int8"
    assert (path / "model.bin").is_file()
    stamp = json.loads((path / ct2.STAMP_FILE).read_text(encoding="utf-8"))
    assert stamp["source"] == str(tiny_qwen.resolve()) and stamp["quantization"] == "int8"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr("ctranslate2.converters.TransformersConverter", no_second_conversion)
    assert ct2.ensure_ct2_model(tiny_qwen, "int8") == path


def test_a_changed_stamp_triggers_a_new_conversion(tiny_qwen, cache):
    path = ct2.ensure_ct2_model(tiny_qwen, "int8")
    stamp = json.loads((path / ct2.STAMP_FILE).read_text(encoding="utf-8"))
    (path / ct2.STAMP_FILE).write_text(json.dumps({**stamp, "source_fingerprint": "old"}), encoding="utf-8")
    assert ct2.ensure_ct2_model(tiny_qwen, "int8") == path
    assert json.loads((path / ct2.STAMP_FILE).read_text(encoding="utf-8")) == stamp


def test_failed_conversion_says_how_to_avoid_it(tmp_path, cache):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}', encoding="utf-8")
    with pytest.raises(ModelError, match='engine = "transformers"'):
        ct2.ensure_ct2_model(tmp_path, "int8")
    assert not (cache / "models").exists() or not list((cache / "models").iterdir())
    with pytest.raises(ModelError, match="no config.json"):
        ct2.ensure_ct2_model(tmp_path / "missing", "int8")
    with pytest.raises(ModelError, match="unknown CTranslate2 quantization"):
        ct2.ensure_ct2_model(tmp_path, "int3")


def test_broken_converted_folder_gives_model_error_and_auto_falls_back(tiny_qwen, cache):
    path = ct2.ensure_ct2_model(tiny_qwen, "int8")
    (path / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="delete that folder"):
        build_generator("causal", str(tiny_qwen), engine="ctranslate2", max_new_tokens=4)
    generator = build_generator("causal", str(tiny_qwen), engine="auto", max_new_tokens=4)
    assert generator.backend == "causal" and generator.engine == "transformers"


def test_engine_choice(tiny_qwen, cache):
    assert build_generator("causal", str(tiny_qwen), max_new_tokens=4).engine == "transformers"  # the default
    # CTranslate2 int8 on every CPU (see choose_engines)
    assert build_generator("causal", str(tiny_qwen), engine="auto", max_new_tokens=4).engine == "ctranslate2"
    assert build_generator("causal", str(tiny_qwen), engine="auto", compute_type="int8", max_new_tokens=4).engine == "ctranslate2"
    assert build_generator("causal", str(tiny_qwen), engine="transformers", max_new_tokens=4).engine == "transformers"
    assert build_generator("causal", str(tiny_qwen), engine="auto", dtype="float32", max_new_tokens=4).engine == "transformers"
    with pytest.raises(ConfigError, match="unknown generation engine"):
        build_generator("causal", str(tiny_qwen), engine="vllm")
    with pytest.raises(ConfigError, match="bad option"):
        build_generator("causal", str(tiny_qwen), engine="ctranslate2", dtype="float32")


@pytest.mark.timeout(180)  # converts the tiny model to CTranslate2, then closes a stream: must not hang
def test_streams_the_same_bounded_deterministic_text(tiny_qwen, cache):
    generator = CTranslate2Generator(str(tiny_qwen), max_new_tokens=12)
    docs = [passage(1, TEXT, "腾讯")]
    answer = generator.generate("腾讯基金会计划出资多少？", docs)
    assert isinstance(answer, str) and "<|im_end|>" not in answer  # random weights: any bytes, no stop token
    shorter = CTranslate2Generator(str(tiny_qwen), max_new_tokens=3).generate("腾讯基金会计划出资多少？", docs)
    assert len(shorter) < len(answer) and answer.startswith(shorter)  # greedy: the same first 3 tokens, then stop
    assert generator.generate("腾讯基金会计划出资多少？", docs) == answer
    assert "".join(generator.stream("腾讯基金会计划出资多少？", docs)).strip() == answer
    pieces = CTranslate2Generator(str(tiny_qwen), max_new_tokens=200).stream("腾讯？", docs)
    next(pieces, None)
    pieces.close()  # must not hang: closing stops the decoding


def test_answerer_falls_back_to_extractive_when_the_forced_engine_cannot_load(tiny_qwen, cache):
    from rag.answering import Answerer
    from rag.config import GenerationConfig

    path = ct2.ensure_ct2_model(tiny_qwen, "int8")
    (path / "model.bin").write_bytes(b"not a model")
    answerer = Answerer(lambda question, top_k: [], GenerationConfig(model=str(tiny_qwen), engine="ctranslate2"))
    assert answerer.generator().backend == "extractive"
    assert "CTranslate2" in answerer.notice


@pytest.mark.parametrize("engine", ["ctranslate2", "transformers"])
def test_prompt_passages_limits_what_the_model_sees(tiny_qwen, cache, engine):
    generator = build_generator("causal", str(tiny_qwen), engine=engine, max_new_tokens=2, prompt=PromptSettings(passages=1))
    user = generator.messages("腾讯？", [passage(1, "甲" * 40), passage(2, "乙" * 40)])[1]["content"]
    assert "[1] " in user and "[2] " not in user


@pytest.mark.parametrize("engine", ["ctranslate2", "transformers"])
def test_stream_reports_the_log_probability_of_each_picked_token(tiny_qwen, cache, engine):
    generator = build_generator("causal", str(tiny_qwen), engine=engine, max_new_tokens=6)
    assert generator.token_log_probs
    log_probs: list[float] = []
    text = "".join(generator.stream("腾讯基金会计划出资多少？", [passage(1, TEXT, "腾讯")], log_probs=log_probs))
    assert text == generator.generate("腾讯基金会计划出资多少？", [passage(1, TEXT, "腾讯")])  # asking for them changes nothing
    assert 1 <= len(log_probs) <= 6
    # Greedy decoding picks the most probable token, which is never below the uniform probability.
    floor = -math.log(len(generator.tokenizer)) - 1e-3
    assert all(floor <= lp <= 1e-6 for lp in log_probs), log_probs


@pytest.mark.parametrize("engine", ["ctranslate2", "transformers"])
def test_stream_counts_the_prompt_and_completion_tokens(tiny_qwen, cache, engine):
    from transformers import AutoTokenizer

    generator = build_generator("causal", str(tiny_qwen), engine=engine, max_new_tokens=6)
    assert generator.reports_usage
    docs = [passage(1, TEXT, "腾讯")]
    usage: dict[str, int] = {}
    log_probs: list[float] = []
    text = "".join(generator.stream("腾讯基金会计划出资多少？", docs, log_probs=log_probs, usage=usage))
    # The prompt as the model's own tokenizer renders the chat, counted apart from the engine.
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen))
    rendered = tokenizer.apply_chat_template(generator.messages("腾讯基金会计划出资多少？", docs),
                                             add_generation_prompt=True, tokenize=False)
    assert usage["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) > 50
    # One log-probability per picked token: the same count, from the engine's other output.
    assert usage["completion_tokens"] == len(log_probs) and 1 <= len(log_probs) <= 6, (usage, text)


# --- the real Qwen2.5-Coder-0.5B, converted from the provisioned folder ---------------------


@pytest.fixture(scope="module")
def qwen_ct2():
    return build_generator("causal", None, engine="ctranslate2", max_new_tokens=48)


@pytest.mark.slow
def test_qwen_ct2_answers_a_dev_question_from_its_gold_passage(qwen_ct2):
    question, answers, docs = dev_gold_case()
    answer = qwen_ct2.generate(question, docs)
    assert any(a.rstrip("家") in answer for a in answers), answer
    assert "".join(qwen_ct2.stream(question, docs)).strip() == answer


@pytest.mark.slow
def test_qwen_ct2_refuses_when_passages_lack_the_answer(qwen_ct2):
    docs = [passage(1, "北京今天晴，最高气温25度。明天有小雨。", "天气")]
    assert qwen_ct2.generate("上海的人口是多少？", docs) == REFUSAL

