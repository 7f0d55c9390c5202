"""CI-short load test: `rag serve` with the extractive backend, 8 concurrent sessions.

The full version is ``python benchmarks/load_test.py`` (see its docstring).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "index" / "default"


def _load_test_module():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_check_answer_catches_foreign_answers() -> None:
    check = _load_test_module().check_answer
    ok = {"question": "腾讯基金会计划出资多少？", "standalone_question": "腾讯基金会计划出资多少？", "answer": "3亿元[1]。", "refused": False,
          "citations": [{"marker": 1, "start": 0, "end": 3, "quote": "3亿元"}], "passages": [{"text": "3亿元，用于"}]}
    assert check("腾讯基金会计划出资多少？", ok) == ""
    assert "another question" in check("谁是理事长？", ok)
    assert "history" in check("腾讯基金会计划出资多少？", dict(ok, standalone_question="北京幸福公益基金会出资多少？"))
    assert "does not quote" in check("腾讯基金会计划出资多少？", dict(ok, passages=[{"text": "8亿元"}]))
    assert "empty answer" in check("腾讯基金会计划出资多少？", dict(ok, answer=""))


@pytest.mark.slow
def test_concurrent_sessions_are_served_without_errors_or_leaks(default_rag) -> None:
    assert (INDEX / "manifest.json").exists()  # default_rag builds it on a fresh clone
    report = _load_test_module().load_test(INDEX, sessions=8, questions=3, backend="extractive", warmup_rounds=1)
    assert report["errors"] == 0, report["error_samples"]
    assert report["served"] == report["requests"] == 24
    assert report["rss_growth"] <= 0.10, report["rss_mb"]
    assert report["ok"], report
