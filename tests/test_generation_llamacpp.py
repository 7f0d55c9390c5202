"""The llama.cpp engine of the causal backend: GGUF lookup, errors, real answers.

Which engine "auto" picks is tested in test_generation_select.py.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from conftest import dev_gold_case, passage

from rag.errors import ModelError
from rag.generation import REFUSAL, Generator, PromptSettings, build_generator
from rag.generation.llamacpp import LlamaCppGenerator, gguf_file
from rag.provision import gguf

#: Tests that run llama.cpp itself; the rest (errors, GGUF files) need no llama-cpp-python.
needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is an optional extra")

ROOT = Path(__file__).resolve().parent.parent
SPEC = gguf.known_model("qwen2.5-coder-0.5b-instruct")


class _Fake(Generator):
    def __init__(self, engine: str, model: str, **kwargs) -> None:
        super().__init__()
        self.engine, self.model_name, self.kwargs = engine, model, kwargs

    def complete(self, messages) -> str:
        return ""


@needs_llama
def test_missing_or_corrupt_gguf_gives_model_error(tmp_path):
    with pytest.raises(ModelError, match="no GGUF file"):
        LlamaCppGenerator(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really" * 100)
    with pytest.raises(ModelError, match="llama.cpp cannot load .*engine = \"transformers\""):
        LlamaCppGenerator(str(bad))
    with pytest.raises(ModelError, match="neither a .gguf file"):
        gguf_file(str(tmp_path))


@needs_llama
def test_corrupt_cached_gguf_gives_model_error(cache):
    kept = cache / "models" / f"{SPEC.name}.gguf"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"truncated")
    with pytest.raises(ModelError, match=re.escape(f"delete {kept}")):
        LlamaCppGenerator(SPEC.hf_id)


def test_forced_llamacpp_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    model = tmp_path / "model.gguf"
    model.write_bytes(b"x")
    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name.startswith("llama_cpp"):
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(ModelError, match=r'pip install -e "\.\[llamacpp\]"'):
        build_generator("causal", str(model), engine="llamacpp")


def test_ensure_gguf_verifies_once(cache, monkeypatch):
    kept = cache / "models" / f"{SPEC.name}.gguf"
    calls: list[Path] = []

    def fake_assemble(spec, dest):
        calls.append(dest)
        dest.write_bytes(b"gguf")
        return dest

    monkeypatch.setattr(gguf, "assemble_gguf", fake_assemble)
    assert gguf.ensure_gguf(SPEC.name) == kept
    assert gguf.ensure_gguf(SPEC.hf_id) == kept
    assert calls == [kept]  # the second call trusted the verification record
    kept.write_bytes(b"changed")
    gguf.ensure_gguf(SPEC.name)
    assert calls == [kept, kept]


def test_answerer_does_not_provision_a_transformers_folder_for_llamacpp(monkeypatch):
    from rag import answering
    from rag.answering import Answerer
    from rag.config import GenerationConfig

    built: list[tuple] = []
    monkeypatch.setattr(answering, "_resolve", lambda model: pytest.fail("provisioned the transformers folder"))
    monkeypatch.setattr(answering, "build_generator", lambda backend, model, **kw: built.append((model, kw)) or _Fake("llamacpp", model))
    Answerer(lambda question, top_k: [], GenerationConfig(engine="llamacpp")).generator()
    assert built[0][0] == SPEC.hf_id and built[0][1]["engine"] == "llamacpp"


# --- the real Qwen2.5-Coder-0.5B GGUF (Q4_K_M), kept in the cache -------------------------


@pytest.fixture(scope="module")
def qwen_llama():
    return build_generator("causal", None, engine="llamacpp", max_new_tokens=48)


@needs_llama
@pytest.mark.slow
def test_qwen_llamacpp_answers_a_dev_question_from_its_gold_passage(qwen_llama):
    assert qwen_llama.engine == "llamacpp"
    question, answers, docs = dev_gold_case()
    answer = qwen_llama.generate(question, docs)
    assert any(a.rstrip("家") in answer for a in answers), answer
    assert "".join(qwen_llama.stream(question, docs)).strip() == answer
    assert qwen_llama.generate(question, docs) == answer  # greedy, cache reset: the same again


@needs_llama
@pytest.mark.slow
def test_qwen_llamacpp_refuses_when_passages_lack_the_answer(qwen_llama):
    docs = [passage(1, "北京今天晴，最高气温25度。明天有小雨。", "天气")]
    assert qwen_llama.generate("上海的人口是多少？", docs) == REFUSAL


@needs_llama
@pytest.mark.slow
@pytest.mark.timeout(300)  # the real model (its GGUF joined on first use); closing must not hang
def test_qwen_llamacpp_stops_when_the_stream_is_closed_and_limits_tokens(qwen_llama):
    docs = [passage(1, "北京今天晴，最高气温25度。明天有小雨。", "天气")]
    pieces = qwen_llama.stream("请详细描述北京的天气，写很长。", docs)
    next(pieces)
    pieces.close()  # must not hang, and must release the lock for the next call
    short = LlamaCppGenerator(max_new_tokens=3).complete([{"role": "user", "content": "从1数到100，用逗号分隔。"}])
    assert len(qwen_llama.model.tokenize(short.encode("utf-8"), add_bos=False)) <= 4, short
    user = qwen_llama.messages("天气？", [passage(1, "甲" * 40), passage(2, "乙" * 40)])[1]["content"]
    assert "[2] " in user
    limited = LlamaCppGenerator(prompt=PromptSettings(passages=1), max_new_tokens=2)
    assert "[2] " not in limited.messages("天气？", [passage(1, "甲" * 40), passage(2, "乙" * 40)])[1]["content"]


@needs_llama
@pytest.mark.slow
def test_q8_copy_is_made_once_beside_the_gguf(tmp_path):
    from rag.generation.llamacpp import q8_copy

    source = tmp_path / "model.gguf"
    source.symlink_to(gguf.ensure_gguf(SPEC.name))
    copy = q8_copy(source)
    assert copy.parent == tmp_path and copy.read_bytes()[:4] == b"GGUF"
    assert copy.stat().st_size > source.stat().st_size  # 8-bit blocks outweigh the 4/5-bit ones
    made = copy.stat().st_mtime_ns
    assert q8_copy(source) == copy and copy.stat().st_mtime_ns == made  # reused, not redone
