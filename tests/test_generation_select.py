"""Which engine runs the causal backend: the pure ``choose_engines`` policy and the fallback loop.

No model is loaded here and nothing is monkeypatched: the policy takes the
installed packages and the options as arguments.
"""
from __future__ import annotations

import itertools
import logging
import subprocess
import sys

import pytest

from rag.errors import ConfigError, ModelError
from rag.generation import ENGINES, Generator, build_generator, choose_engines
from rag.generation.factory import load_first

HF_ID = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
MODELS = (HF_ID, "qwen2.5-coder-0.5b-instruct", "/models/qwen-folder", "/models/model.gguf.d")
PACKAGES = ("ctranslate2", "llama_cpp")
INSTALLED = [set(c) for n in range(len(PACKAGES) + 1) for c in itertools.combinations(PACKAGES, n)]
OPTIONS = [(), ("max_new_tokens", "prompt_lookup"), ("dtype",), ("compute_type",), ("dtype", "compute_type")]


def auto(model: str = HF_ID, *, installed=frozenset(PACKAGES), options=()) -> list[str]:
    return choose_engines(model, "auto", installed=installed, options=options)


def test_auto_tries_ctranslate2_then_transformers():
    assert auto(installed={"ctranslate2"}) == ["ctranslate2", "transformers"]
    assert auto(installed={"ctranslate2", "llama_cpp"}) == ["ctranslate2", "transformers"]
    assert auto(installed={"llama_cpp"}) == ["transformers"]
    assert auto(installed=set()) == ["transformers"]
    assert auto(installed=lambda module: module == "ctranslate2") == ["ctranslate2", "transformers"]  # a predicate too
    assert auto(installed=lambda module: False) == ["transformers"]


def test_auto_never_picks_llamacpp_for_a_model_that_is_not_a_gguf_file():
    for model, installed, options in itertools.product(MODELS, INSTALLED, OPTIONS):
        engines = auto(model, installed=installed, options=options)
        assert "llamacpp" not in engines and engines, (model, installed, options)


def test_engine_options_ask_for_their_engine():
    assert auto(options={"dtype": "float32"}.keys()) == ["transformers"]  # a transformers option
    assert auto(options=["compute_type"]) == ["ctranslate2"]  # a CTranslate2 option
    assert auto(options=["dtype", "compute_type"]) == ["transformers"]  # transformers rejects compute_type
    assert auto(options=["max_new_tokens", "prompt_lookup"]) == auto()


def test_named_engines_are_used_as_named():
    for engine, installed in itertools.product(("ctranslate2", "llamacpp", "transformers"), INSTALLED):
        assert choose_engines(HF_ID, engine, installed=installed) == [engine]


def test_gguf_files_run_on_llamacpp_only():
    for model, installed, options in itertools.product(("/m/user.gguf", "~/M.GGUF"), INSTALLED, OPTIONS):
        for engine in ("auto", "llamacpp"):
            assert choose_engines(model, engine, installed=installed, options=options) == ["llamacpp"]
        for engine in ("ctranslate2", "transformers"):
            with pytest.raises(ModelError, match='GGUF file, which only llama.cpp runs; set generation.engine = "llamacpp"'):
                choose_engines(model, engine, installed=installed, options=options)


def test_unknown_engine_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown generation engine 'vllm'; choose one of: " + ", ".join(ENGINES)):
        choose_engines(HF_ID, "vllm", installed=set())


def test_build_generator_reports_policy_errors_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="unknown generation engine"):
        build_generator("causal", HF_ID, engine="vllm")
    for engine in ("transformers", "ctranslate2"):
        with pytest.raises(ModelError, match='engine = "llamacpp"'):
            build_generator("causal", str(tmp_path / "model.gguf"), engine=engine)
    # "auto" sends a .gguf file to llama.cpp, which says how to install it, or, installed, that the file is missing.
    with pytest.raises(ModelError, match=r'pip install -e "\.\[llamacpp\]"|no GGUF file'):
        build_generator("causal", str(tmp_path / "missing.gguf"), engine="auto")


class _Fake(Generator):
    def __init__(self, engine: str) -> None:
        super().__init__()
        self.engine = engine

    def complete(self, messages) -> str:
        return ""


def _loader(failing: set[str], tried: list[str]):
    def load(engine: str) -> Generator:
        tried.append(engine)
        if engine in failing:
            raise ModelError(f"{engine} is broken")
        return _Fake(engine)

    return load


def test_load_first_falls_back_with_a_warning(caplog):
    tried: list[str] = []
    with caplog.at_level(logging.WARNING, logger="rag.generation.factory"):
        generator = load_first(["ctranslate2", "transformers"], _loader({"ctranslate2"}, tried), HF_ID)
    assert generator.engine == "transformers" and tried == ["ctranslate2", "transformers"]
    assert f"CTranslate2 cannot run {HF_ID}, trying transformers: ctranslate2 is broken" in caplog.text


def test_load_first_stops_at_the_first_engine_that_loads_and_raises_the_last_error():
    tried: list[str] = []
    assert load_first(["ctranslate2", "transformers"], _loader(set(), tried), HF_ID).engine == "ctranslate2"
    assert tried == ["ctranslate2"]
    with pytest.raises(ModelError, match="transformers is broken"):
        load_first(["ctranslate2", "transformers"], _loader({"ctranslate2", "transformers"}, []), HF_ID)
    with pytest.raises(ModelError, match="llamacpp is broken"):  # no other engine reads a .gguf file
        load_first(["llamacpp"], _loader({"llamacpp"}, []), "/m/user.gguf")

    def bad_option(engine: str) -> Generator:
        raise TypeError("unexpected keyword argument 'temperature'")

    with pytest.raises(TypeError):  # not a loading failure: no fallback (build_generator makes it a ConfigError)
        load_first(["ctranslate2", "transformers"], bad_option, HF_ID)


def test_importing_the_package_loads_no_engine():
    code = ("import sys, rag.generation; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'ctranslate2', 'llama_cpp'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
