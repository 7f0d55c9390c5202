"""The CTranslate2 engine's cached system prompt: an exact split of the prompt, the same answers."""
from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, dev_gold_case, passage
from conftest import TINY_TEXT as TEXT

from rag.errors import QuestionError
from rag.generation import PromptSettings, build_generator

pytest.importorskip("ctranslate2")
from rag.generation.ct2 import _MAX_CACHED_PREFIXES  # noqa: E402


class RecordingModel:
    """Wraps a ``ctranslate2.Generator``, keeping the arguments of every ``generate_tokens`` call."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def generate_tokens(self, prompt, **options):
        self.calls.append({"prompt": prompt, **options})
        return self.model.generate_tokens(prompt, **options)


@pytest.fixture
def tiny_ct2(tiny_qwen, cache):
    generator = build_generator("causal", str(tiny_qwen), engine="ctranslate2", max_new_tokens=8)
    generator.model = RecordingModel(generator.model)
    return generator


def test_static_prompt_is_the_system_turn_and_the_split_is_exact(tiny_ct2):
    messages = tiny_ct2.messages("腾讯基金会计划出资多少？", [passage(1, TEXT, "腾讯")])
    tiny_ct2.complete(messages)
    call = tiny_ct2.model.calls[-1]
    ids = tiny_ct2._encode(messages)
    assert call["static_prompt"] + call["prompt"] == tiny_ct2.tokenizer.convert_ids_to_tokens(ids)
    assert tiny_ct2.tokenizer.convert_tokens_to_string(call["static_prompt"]) == (
        f"<|im_start|>system\n{messages[0]['content']}<|im_end|>\n"
    )
    assert call["cache_static_prompt"] is True


def test_cached_system_prompt_changes_no_token_and_no_log_probability(tiny_ct2):
    for question in ("腾讯基金会计划出资多少？", "北京明天天气如何？"):
        messages = tiny_ct2.messages(question, [passage(1, TEXT, "腾讯")])
        runs = []
        for cached in (False, True, True):  # recomputed, cached on first use, then reused
            tiny_ct2.cache_system_prompt = cached
            log_probs: list[float] = []
            runs.append(("".join(tiny_ct2.stream_complete(messages, log_probs=log_probs)), log_probs))
        assert tiny_ct2.model.calls[-3]["static_prompt"] is None
        assert runs[0][0] and runs[1][0] == runs[0][0] == runs[2][0]
        assert all(math.isclose(a, b, abs_tol=1e-4) for run in runs[1:] for a, b in zip(run[1], runs[0][1], strict=True))


def test_input_limit_still_counts_the_system_turn(tiny_ct2):
    messages = tiny_ct2.messages("腾讯？", [passage(1, TEXT, "腾讯")])
    n_ids = len(tiny_ct2._encode(messages))
    tiny_ct2.max_input_tokens = n_ids - 1  # the user turn alone would fit
    with pytest.raises(QuestionError, match=f"the prompt has {n_ids} tokens"):
        tiny_ct2.complete(messages)
    assert tiny_ct2.model.calls == []


def test_no_system_turn_or_too_many_system_turns_run_the_whole_prompt(tiny_ct2):
    tiny_ct2.complete([{"role": "user", "content": "腾讯？"}])
    assert tiny_ct2.model.calls[-1]["static_prompt"] is None
    # CTranslate2 never forgets a cached state: only a few system turns are cached.
    for n in range(_MAX_CACHED_PREFIXES + 2):
        tiny_ct2.complete([{"role": "system", "content": f"问题{n}"}, {"role": "user", "content": "腾讯？"}])
    statics = [call["static_prompt"] for call in tiny_ct2.model.calls[-_MAX_CACHED_PREFIXES - 2 :]]
    assert all(statics[:_MAX_CACHED_PREFIXES]) and statics[_MAX_CACHED_PREFIXES:] == [None, None]


# --- the real Qwen2.5-Coder-0.5B: greedy answers token for token --------------------------


@pytest.fixture(scope="module")
def qwen_ct2():
    generator = build_generator("causal", None, engine="ctranslate2", max_new_tokens=48, prompt=PromptSettings(passages=3))
    generator.model = RecordingModel(generator.model)
    return generator


@pytest.mark.slow
def test_qwen_answers_are_identical_with_the_cached_system_prompt(qwen_ct2):
    question, _, docs = dev_gold_case()
    with open(ROOT / "eval" / "dev_questions.jsonl", encoding="utf-8") as f:
        others = [item for item in map(json.loads, f) if item.get("evidence")][10::20]
    cases = [(question, docs)] + [
        (item["question"], [passage(1, item["evidence"] + "。", "资料"), docs[1]]) for item in others
    ]
    assert len(cases) >= 4
    for question, docs in cases:
        qwen_ct2.cache_system_prompt = False
        before: list[float] = []
        recomputed = "".join(qwen_ct2.stream(question, docs, log_probs=before))
        qwen_ct2.cache_system_prompt = True
        after: list[float] = []
        cached = "".join(qwen_ct2.stream(question, docs, log_probs=after))
        assert qwen_ct2.model.calls[-1]["static_prompt"], "the system turn was not split off"
        assert cached == recomputed
        assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(after, before, strict=True))
