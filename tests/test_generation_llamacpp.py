"""The llama.cpp engine of the causal backend: GGUF lookup, engine choice, errors, real answers."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import dev_gold_case, passage

from rag import generation
from rag.errors import ModelError
from rag.generation import REFUSAL, Generator, build_generator
from rag.generation_fast import LlamaCppGenerator, gguf_file
from rag.provision import gguf

#: Tests that run llama.cpp itself; the rest (engine choice, errors, GGUF files) need no llama-cpp-python.
needs_llama = pytest.mark.skipif(not generation._installed("llama_cpp"), reason="llama-cpp-python is an optional extra")

ROOT = Path(__file__).resolve().parent.parent
SPEC = gguf.known_model("qwen2.5-coder-0.5b-instruct")


class _Fake(Generator):
    def __init__(self, engine: str, model: str, **kwargs) -> None:
        super().__init__()
        self.engine, self.model_name, self.kwargs = engine, model, kwargs

    def complete(self, messages) -> str:
        return ""


@pytest.fixture
def fake_engines(monkeypatch) -> list[str]:
    """Replace the three engines with fakes that record which was built; "fail" in the model name fails llama.cpp."""
    tried: list[str] = []

    def engine(name: str):
        def build(model: str, **kwargs):
            tried.append(name)
            if name == "llamacpp" and "fail" in model:
                raise ModelError("broken GGUF")
            return _Fake(name, model, **kwargs)

        return build

    monkeypatch.setattr(generation, "_llamacpp_generator", engine("llamacpp"))
    monkeypatch.setattr(generation, "_ctranslate2_generator", engine("ctranslate2"))
    monkeypatch.setattr(generation, "CausalGenerator", engine("transformers"))
    return tried


def test_auto_prefers_llamacpp_for_gguf_models_only_without_native_bf16(fake_engines, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "_installed", lambda module: True)
    monkeypatch.setattr(generation, "_fast_bf16", lambda: True)
    assert build_generator("causal", SPEC.hf_id, engine="auto").engine == "transformers"  # bf16 + prompt lookup is faster
    assert build_generator("causal", str(tmp_path / "user.gguf"), engine="auto").engine == "llamacpp"
    monkeypatch.setattr(generation, "_fast_bf16", lambda: False)
    folder = tmp_path / "provisioned"
    folder.mkdir()
    (folder / gguf.PROVENANCE_FILE).write_text(json.dumps({"name": SPEC.name, "gguf_sha256": SPEC.sha256}), encoding="utf-8")
    for model in (SPEC.hf_id, SPEC.name, str(folder), str(tmp_path / "user.gguf")):
        assert build_generator("causal", model, engine="auto").engine == "llamacpp", model
    assert build_generator("causal", str(tmp_path), engine="auto").engine == "ctranslate2"  # a plain folder: no GGUF
    assert build_generator("causal", SPEC.hf_id, engine="auto", dtype="float32").engine == "transformers"
    assert build_generator("causal", SPEC.hf_id, engine="auto", compute_type="int8").engine == "ctranslate2"
    assert build_generator("causal", SPEC.hf_id).engine == "transformers"  # build_generator's own default
    assert build_generator("causal", SPEC.hf_id, engine="llamacpp").engine == "llamacpp"


def test_auto_falls_back_with_a_warning(fake_engines, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(generation, "_installed", lambda module: True)
    monkeypatch.setattr(generation, "_fast_bf16", lambda: False)
    folder = tmp_path / "fail"
    folder.mkdir()
    (folder / gguf.PROVENANCE_FILE).write_text(json.dumps({"name": SPEC.name, "gguf_sha256": SPEC.sha256}), encoding="utf-8")
    assert build_generator("causal", str(folder), engine="auto").engine == "ctranslate2"  # the next engine
    assert fake_engines == ["llamacpp", "ctranslate2"]
    assert "llama.cpp cannot run" in caplog.text
    monkeypatch.setattr(generation, "_installed", lambda module: module == "llama_cpp")
    assert build_generator("causal", str(folder), engine="auto").engine == "transformers"
    with pytest.raises(ModelError, match="broken GGUF"):  # no other engine reads a .gguf file
        build_generator("causal", str(tmp_path / "fail.gguf"), engine="auto")


def test_gguf_files_need_llamacpp(tmp_path):
    for engine in ("transformers", "ctranslate2"):
        with pytest.raises(ModelError, match='engine = "llamacpp"'):
            build_generator("causal", str(tmp_path / "model.gguf"), engine=engine)


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
def test_qwen_llamacpp_stops_when_the_stream_is_closed_and_limits_tokens(qwen_llama):
    docs = [passage(1, "北京今天晴，最高气温25度。明天有小雨。", "天气")]
    pieces = qwen_llama.stream("请详细描述北京的天气，写很长。", docs)
    next(pieces)
    pieces.close()  # must not hang, and must release the lock for the next call
    short = LlamaCppGenerator(max_new_tokens=3).complete([{"role": "user", "content": "从1数到100，用逗号分隔。"}])
    assert len(qwen_llama.model.tokenize(short.encode("utf-8"), add_bos=False)) <= 4, short
    user = qwen_llama.messages("天气？", [passage(1, "甲" * 40), passage(2, "乙" * 40)])[1]["content"]
    assert "[2] " in user
    limited = LlamaCppGenerator(prompt_passages=1, max_new_tokens=2)
    assert "[2] " not in limited.messages("天气？", [passage(1, "甲" * 40), passage(2, "乙" * 40)])[1]["content"]


@needs_llama
@pytest.mark.slow
def test_q8_copy_is_made_once_beside_the_gguf(tmp_path):
    from rag.generation_fast import q8_copy

    source = tmp_path / "model.gguf"
    source.symlink_to(gguf.ensure_gguf(SPEC.name))
    copy = q8_copy(source)
    assert copy.parent == tmp_path and copy.read_bytes()[:4] == b"GGUF"
    assert copy.stat().st_size > source.stat().st_size  # 8-bit blocks outweigh the 4/5-bit ones
    made = copy.stat().st_mtime_ns
    assert q8_copy(source) == copy and copy.stat().st_mtime_ns == made  # reused, not redone
