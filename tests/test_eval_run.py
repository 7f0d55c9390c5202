"""Evaluation runs over a tiny question set with a fake pipeline, and the CLI."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag import cli_eval
from rag.cli import cli
from rag.evaluation import runner
from rag.evaluation.compare import compare_runs
from rag.errors import EvaluationError, QuestionError
from rag.evaluation.runner import load_questions, run_eval
from rag.records import Answer, Chunk, Citation, Passage

CHUNKS = {
    "c1": Chunk("c1", "doc-001", "2018年共有148家基金会关注精神卫生领域。", 0, 21),
    "c2": Chunk("c2", "doc-002", "身故者家属可获得25万元保障金。", 0, 16),
    "c3": Chunk("c3", "doc-003", "其他无关内容。", 0, 7),
    "c4": Chunk("c4", "doc-001", "北京幸福公益基金会成立于2009年。", 21, 38),
}
QUESTIONS = [
    {"id": "q1", "question": "多少家基金会关注精神卫生？", "answers": ["148家"], "doc_ids": ["doc-018"], "type": "number"},
    {"id": "q2", "question": "家属可获得多少保障金？", "answers": ["25万元"], "doc_ids": ["doc-002"], "type": "number"},
    {"id": "q3", "question": "理事长是谁？", "answers": ["倪子君"], "doc_ids": ["doc-003"], "type": "person"},
    {"id": "q4", "question": "明年的预算是多少？", "answers": [], "doc_ids": [], "type": "unanswerable"},
    {"id": "q5", "question": "志愿者有多少人？", "answers": [], "doc_ids": [], "type": "unanswerable"},
]
# question -> (retrieved chunk ids, answer text, cited (marker, chunk id), answer passages, refused)
SCRIPT = {
    "q1": (["c3", "c1", "c4"], "共有148家[1]。", [(1, "c1")], ["c1", "c3"], False),
    "q2": (["c2", "c3"], "25万元[1]。资料中没有提到发放时间[2]。", [(1, "c2"), (2, "c3"), (1, "c2")], ["c2", "c3"], False),
    "q3": (["c3", "c4"], "根据资料无法回答该问题。", [], ["c3", "c4"], True),
    "q4": (["c4"], "根据资料无法回答该问题。", [], ["c4"], True),
    "q5": (["c3"], "大约100人[1]。", [(1, "c3")], ["c3"], False),
}
# Fake clock steps (seconds) for each question's retrieve and ask calls.
RETRIEVE_S = {"q1": 0.010, "q2": 0.020, "q3": 0.030, "q4": 0.040, "q5": 0.050}
ASK_S = {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 0.4, "q5": 0.5}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class FakeRAG:
    """Fixed records per question; counts calls; advances a fake clock."""

    def __init__(self, clock: FakeClock, script: dict = SCRIPT) -> None:
        self.clock = clock
        self.script = script
        self.by_text = {q["question"]: q["id"] for q in QUESTIONS}
        self.asked: list[str] = []

    @staticmethod
    def _passages(ids: list[str]) -> tuple[Passage, ...]:
        return tuple(Passage(CHUNKS[c], score=1.0 / (i + 1)) for i, c in enumerate(ids))

    def resolve_doc_id(self, doc_id: str) -> str:
        return {"doc-018": "doc-001"}.get(doc_id, doc_id)

    def retrieve(self, question: str, top_k: int | None = None) -> list[Passage]:
        qid = self.by_text[question]
        self.clock.now += RETRIEVE_S[qid]
        return list(self._passages(self.script[qid][0]))[:top_k]

    def ask(self, question: str, history=None, top_k: int | None = None, generator=None) -> Answer:
        qid = self.by_text[question]
        self.asked.append(qid)
        self.clock.now += ASK_S[qid]
        _, text, cites, context, refused = self.script[qid]
        citations = tuple(Citation(n, CHUNKS[c].doc_id, c, CHUNKS[c].text[:4], 0, 4) for n, c in cites)
        return Answer(question, text, citations, self._passages(context), refused, {"total_ms": 1.0})


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(runner, "time", fake)
    return fake


def test_full_run_writes_complete_folder(tmp_path: Path, questions_file: Path, clock: FakeClock) -> None:
    rag = FakeRAG(clock)
    result = run_eval(rag, load_questions(questions_file), tmp_path / "run", top_k=2, settings={"name": "fake"})
    run = tmp_path / "run"
    for name in ("config.json", "metrics.json", "predictions.jsonl", "report.md", "by_type.png", "hit_at_k.png", "latency.png"):
        assert (run / name).is_file(), name
    assert (run / "hit_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rag.asked == ["q1", "q1", "q2", "q3", "q4", "q5"]  # warm-up, then each once

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == pytest.approx(result.metrics)
    expected = {
        "count.questions": 5, "count.answerable": 3, "count.unanswerable": 2,
        # relevance: q1 [F,T,F] (doc-018 resolves to doc-001), q2 [T,F], q3 [F,F]
        "retrieval.hit@1": 1 / 3, "retrieval.hit@3": 2 / 3, "retrieval.hit@5": 2 / 3, "retrieval.hit@10": 2 / 3,
        "retrieval.mrr@10": (0.5 + 1 + 0) / 3, "retrieval.ndcg@10": (1 / math.log2(3) + 1 + 0) / 3,
        # short answers: "共有148家。", "25万元。", "" (refused)
        "answer.accuracy": 2 / 3, "answer.exact_match": 1 / 3, "answer.f1": (2 / 3 + 1 + 0) / 3,
        # cited passages of answerable questions: q1 c1 (good), q2 c2 (good) + c3 (no); q5's citation not counted
        "citation.precision": 2 / 3, "citation.recall": 2 / 3,
        "refusal.recall": 1 / 2, "refusal.false_rate": 1 / 3,
        "latency.retrieve.p50_ms": 30.0, "latency.retrieve.p95_ms": 48.0,
        "latency.total.p50_ms": 300.0, "latency.total.p95_ms": 480.0,
        "by_type.number.answer.accuracy": 1.0, "by_type.number.answer.f1": (2 / 3 + 1) / 2,
        "by_type.person.answer.accuracy": 0.0, "by_type.unanswerable.refusal.recall": 0.5,
    }
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)

    items = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [i["id"] for i in items] == ["q1", "q2", "q3", "q4", "q5"]
    q2 = items[1]
    assert q2["short_answer"] == "25万元。" and q2["refused"] is False
    assert [c["chunk_id"] for c in q2["cited"]] == ["c2", "c3"]  # the repeated [1] counts once
    assert [r["chunk_id"] for r in q2["retrieved"]] == ["c2", "c3"] and q2["retrieved"][0]["relevant"] is True
    assert q2["metrics"]["answer.exact_match"] == 1.0 and q2["timings"]["retrieve_ms"] == pytest.approx(20.0)
    assert items[0]["gold_doc_ids"] == ["doc-001"]
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "by_type.png" in report and "| answer.accuracy | 0.667 |" in report


def test_retrieval_only_never_asks(tmp_path: Path, questions_file: Path, clock: FakeClock) -> None:
    rag = FakeRAG(clock)
    result = run_eval(rag, load_questions(questions_file), tmp_path / "run", retrieval_only=True)
    assert rag.asked == []
    assert {k.split(".")[0] for k in result.metrics} == {"retrieval", "latency", "count", "run"}
    assert result.metrics["retrieval.mrr@10"] == pytest.approx(0.5)
    assert result.metrics["latency.total.p50_ms"] == pytest.approx(30.0)


def test_uncomputable_metric_stops_the_run(tmp_path: Path, questions_file: Path, clock: FakeClock) -> None:
    answerable_only = [q for q in load_questions(questions_file) if q.answerable]
    with pytest.raises(EvaluationError, match="refusal.recall"):
        run_eval(FakeRAG(clock), answerable_only, tmp_path / "run")
    assert (tmp_path / "run" / "predictions.jsonl").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_failed_question_and_bad_citation_stop_the_run(tmp_path: Path, questions_file: Path, clock: FakeClock) -> None:
    class Failing(FakeRAG):
        def ask(self, question, history=None, top_k=None, generator=None):
            if self.asked:
                raise QuestionError("问题过长")
            return super().ask(question)

    with pytest.raises(EvaluationError, match="question q1 failed"):
        run_eval(Failing(clock), load_questions(questions_file), tmp_path / "a")
    bad = dict(SCRIPT, q2=(["c2"], "25万元[3]。", [(3, "c4")], ["c2"], False))
    with pytest.raises(EvaluationError, match=r"q2: citation \[3\] names chunk c4"):
        run_eval(FakeRAG(clock, bad), load_questions(questions_file), tmp_path / "b")
    with pytest.raises(EvaluationError, match="not empty"):
        run_eval(FakeRAG(clock), load_questions(questions_file), tmp_path / "b")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not a question record"),
        (json.dumps({"id": "x", "question": "问？", "answers": ["a"], "doc_ids": ["doc-001"], "type": "unanswerable"}), "unanswerable"),
        (json.dumps({"id": "x", "question": "问？", "answers": [], "doc_ids": [], "type": "number"}), "only 'unanswerable'"),
        (json.dumps({"id": "q1", "question": "问？", "answers": [], "doc_ids": [], "type": "unanswerable"}), "duplicate"),
    ],
)
def test_load_questions_errors_name_the_line(tmp_path: Path, questions_file: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(questions_file.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=message) as e:
        load_questions(path)
    assert "bad.jsonl:6" in str(e.value)


def test_cli_retrieval_only_with_fake(tmp_path: Path, questions_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    rag = FakeRAG(clock)
    monkeypatch.setattr(cli_eval, "load_rag", lambda index_dir, config: rag)
    out = tmp_path / "run"
    args = ["eval", "--questions", str(questions_file), "--index-dir", str(tmp_path / "idx"), "--retrieval-only", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "retrieval.hit@1" in result.output and rag.asked == []
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["eval"]["retrieval_only"] is True and config["rag"]["retrieval"]["top_k"] == 5
    assert (out / "report.md").is_file()

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "not empty" in again.output
    assert CliRunner().invoke(cli, ["eval"]).exit_code == 2
    assert CliRunner().invoke(cli, ["eval", "--retrieval-only", "--generator", "causal", "--questions", str(questions_file)]).exit_code == 2


def test_cli_compare_lists_changed_questions(tmp_path: Path, questions_file: Path, clock: FakeClock) -> None:
    questions = load_questions(questions_file)
    run_eval(FakeRAG(clock), questions, tmp_path / "a")
    changed = dict(SCRIPT, q1=(["c3", "c1"], "共有200家[1]。", [(1, "c1")], ["c1"], False),
                   q3=(["c3"], "倪子君。", [], ["c3"], False))
    run_eval(FakeRAG(clock, changed), questions, tmp_path / "b")

    comparison = compare_runs(tmp_path / "a", tmp_path / "b")
    assert comparison.basis == "correct"
    assert [c.id for c in comparison.right_to_wrong] == ["q1"]
    assert [c.id for c in comparison.wrong_to_right] == ["q3"]

    result = CliRunner().invoke(cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    accuracy = next(line for line in lines if line.startswith("answer.accuracy "))
    assert accuracy.split()[1:] == ["0.6667", "0.6667", "+0"]
    refusal = next(line for line in lines if line.startswith("refusal.false_rate "))
    assert refusal.split()[1:] == ["0.3333", "0", "-0.3333"]
    assert "right -> wrong (correct): 1" in result.output and "q1 [number]" in result.output
    assert "wrong -> right (correct): 1" in result.output and "q3 [person]" in result.output

    as_json = CliRunner().invoke(cli, ["eval", "compare", "--json", str(tmp_path / "a"), str(tmp_path / "b")])
    assert json.loads(as_json.output)["right_to_wrong"] == ["q1"]
    assert CliRunner().invoke(cli, ["eval", "--name", "x", "compare", str(tmp_path / "a"), str(tmp_path / "b")]).exit_code == 2


def test_eval_takes_build_settings_from_the_index_and_answer_settings_from_today(tmp_path) -> None:
    import json

    from rag.cli_eval import resolve_config
    from rag.config import Config

    stored = Config().with_overrides(chunking={"max_chars": 150}, generation={"engine": "llamacpp", "prompt_passages": 0})
    (tmp_path / "manifest.json").write_text(json.dumps({"config": stored.to_dict()}), encoding="utf-8")
    config = resolve_config(tmp_path, None, {"model": None})
    assert config.chunking.max_chars == 150  # how the index was chunked stays
    assert config.generation == Config().generation and config.answer == Config().answer  # an old index pins no old generator
    assert resolve_config(tmp_path, None, {"backend": "extractive"}).generation.backend == "extractive"


class FallbackRAG(FakeRAG):
    """Answers as the extractive fallback does when the generator model cannot load."""

    def ask(self, question: str, history=None, top_k: int | None = None, generator=None) -> Answer:
        answer = super().ask(question, history, top_k, generator)
        return dataclasses.replace(answer, backend="extractive", notice="生成模型无法加载，已改用抽取式回答：no model")


def test_a_run_whose_generator_fell_back_is_refused_unless_allowed(tmp_path: Path, questions_file: Path,
                                                                    clock: FakeClock) -> None:
    questions = load_questions(questions_file)
    with pytest.raises(EvaluationError, match="fell back.*--allow-fallback"):
        run_eval(FallbackRAG(clock), questions, tmp_path / "refused")
    assert not (tmp_path / "refused" / "metrics.json").exists()

    run_eval(FallbackRAG(clock), questions, tmp_path / "allowed", allow_fallback=True)
    config = json.loads((tmp_path / "allowed" / "config.json").read_text(encoding="utf-8"))
    assert "no model" in config["eval"]["generator_fallback"]
    assert (tmp_path / "allowed" / "metrics.json").is_file()
