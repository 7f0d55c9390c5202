"""`rag eval --squad`: converting a CMRC 2018 / SQuAD file, leave-out, and the CLI end to end."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag import cli_eval
from rag.cli import cli
from rag.evaluation import squad as squad_mod
from rag.errors import EvaluationError
from rag.evaluation.metrics import cmrc_f1
from rag.evaluation.squad import corpus_path, load_squad, squad_index_dir
from rag.records import Answer, Chunk, Citation, Passage
from conftest import FakeEmbedder

CONTEXT_A = "北京大学创建于1898年，初名京师大学堂，是中国近代第一所国立综合性大学。校址位于北京市海淀区颐和园路5号。"
CONTEXT_B = "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长约6700公里。"
CONTEXT_C = "大熊猫是中国特有的物种，主要栖息在四川、陕西和甘肃的山区，以竹子为主要食物。"
CMRC = {
    "version": "v1.0",
    "data": [
        {"title": "北京大学", "id": "DEV_1", "paragraphs": [
            {"id": "DEV_1", "context": CONTEXT_A, "qas": [
                {"id": "DEV_1_QUERY_0", "question": "北京大学创建于哪一年？",
                 "answers": [{"text": "1898年", "answer_start": 7}, {"text": "1898年", "answer_start": 7}]},
                {"id": "DEV_1_QUERY_1", "question": "北京大学最初叫什么名字？",
                 "answers": [{"text": "京师大学堂", "answer_start": 15}]},
            ]},
        ]},
        {"title": "长城", "paragraphs": [
            {"id": "DEV_2", "context": CONTEXT_B, "qas": [
                {"id": "DEV_2_QUERY_0", "question": "长城东起哪里？", "answers": [{"text": "山海关", "answer_start": 17}]},
                {"id": "DEV_2_QUERY_1", "question": "长城由谁设计？", "answers": [], "is_impossible": True},
            ]},
        ]},
        {"title": "熊猫", "paragraphs": [
            {"context": CONTEXT_C, "qas": [
                {"id": "DEV_3_QUERY_0", "question": "大熊猫主要吃什么？", "answers": [{"text": "竹子", "answer_start": 30}]},
            ]},
        ]},
    ],
}
# Seed 0 leaves out context 1 (长城) when one of three goes; seed 1 leaves out context 0.
# question -> (answer, answerability score)
ANSWERS = {
    "北京大学创建于哪一年？": ("创建于1898年[1]。", 0.9),
    "北京大学最初叫什么名字？": ("初名京师大学[1]。", 0.6),  # 4 of 京师大学堂's 5 characters in order
    "长城东起哪里？": ("山海关[1]。", 0.7),
    "长城由谁设计？": ("根据资料无法回答该问题。", 0.1),
    "大熊猫主要吃什么？": ("竹子[1]。", 0.8),
}


@pytest.fixture
def cmrc_file(tmp_path: Path) -> Path:
    path = tmp_path / "cmrc_dev.json"
    path.write_text(json.dumps(CMRC, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_conversion(cmrc_file: Path) -> None:
    squad = load_squad(cmrc_file)
    assert [(c.id, c.title) for c in squad.contexts] == [("DEV_1", "北京大学"), ("DEV_2", "长城"), ("熊猫-3", "熊猫")]
    assert squad.documents()[2] == {"id": "熊猫-3", "title": "熊猫", "text": CONTEXT_C}
    q = {x.id: x for x in squad.questions}
    assert list(q) == ["DEV_1_QUERY_0", "DEV_1_QUERY_1", "DEV_2_QUERY_0", "DEV_2_QUERY_1", "DEV_3_QUERY_0"]
    assert q["DEV_1_QUERY_0"].answers == ("1898年",) and q["DEV_1_QUERY_0"].type == "span"  # repeated answer once
    assert q["DEV_1_QUERY_0"].doc_ids == ("DEV_1",) and q["DEV_3_QUERY_0"].doc_ids == ("熊猫-3",)
    assert (q["DEV_2_QUERY_1"].type, q["DEV_2_QUERY_1"].answerable) == ("unanswerable", False)
    assert squad.summary() == {"contexts_kept": 3, "contexts_left_out": 0, "left_out_ids": [],
                               "answerable": 4, "unanswerable": 1}


def test_repeated_context_is_one_document(tmp_path: Path) -> None:
    data = {"data": [{"title": "t", "paragraphs": [
        {"context": CONTEXT_A, "qas": [{"id": "a", "question": "问一？", "answers": [{"text": "1898年"}]}]},
        {"context": CONTEXT_A, "qas": [{"id": "b", "question": "问二？", "answers": [{"text": "京师大学堂"}]}]},
    ]}]}
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    squad = load_squad(path)
    assert [c.id for c in squad.contexts] == ["t-1"]
    assert [q.doc_ids for q in squad.questions] == [("t-1",), ("t-1",)]


def test_leave_out_is_seeded_and_turns_questions_unanswerable(cmrc_file: Path) -> None:
    squad = load_squad(cmrc_file)
    left = squad.leave_out(0.34, seed=0)  # round(0.34 * 3) = 1 context
    assert [c.id for c in left.contexts] == ["DEV_1", "熊猫-3"] and [c.id for c in left.left_out] == ["DEV_2"]
    assert left == squad.leave_out(0.34, seed=0)  # same seed, same choice
    assert [c.id for c in squad.leave_out(0.34, seed=1).left_out] == ["DEV_1"]
    q = {x.id: x for x in left.questions}
    assert (q["DEV_2_QUERY_0"].type, q["DEV_2_QUERY_0"].answers, q["DEV_2_QUERY_0"].doc_ids) == ("unanswerable", (), ())
    assert q["DEV_1_QUERY_0"] == {x.id: x for x in squad.questions}["DEV_1_QUERY_0"]
    assert left.summary() == {"contexts_kept": 2, "contexts_left_out": 1, "left_out_ids": ["DEV_2"],
                              "answerable": 3, "unanswerable": 2}
    assert [d["id"] for d in left.documents()] == ["DEV_1", "熊猫-3"]
    two = squad.leave_out(0.5, seed=0)  # round(1.5) = 2
    assert [c.id for c in two.contexts] == ["DEV_1"] and two.summary()["unanswerable"] == 3
    assert squad.leave_out(0.0, seed=5) == squad


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_leave_out_fraction_outside_range(cmrc_file: Path, fraction: float) -> None:
    with pytest.raises(EvaluationError, match=r"cmrc_dev\.json: leave-out fraction .* outside \[0, 1\)"):
        load_squad(cmrc_file).leave_out(fraction)


def _broken(edit) -> dict:
    data = json.loads(json.dumps(CMRC))
    edit(data)
    return data


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"bad\.json is not valid JSON \(line 1, column 2"),
        (json.dumps({"version": "v1"}), r"bad\.json: missing key 'data'; expected \{\"data\""),
        (json.dumps({"data": []}), r"bad\.json holds no questions"),
        (json.dumps({"data": [{"title": "x", "paragraphs": []}]}), r"bad\.json holds no questions"),
        (json.dumps(_broken(lambda d: d["data"][1]["paragraphs"][0].pop("context"))),
         r"bad\.json: data\[1\]\.paragraphs\[0\]: missing key 'context'"),
        (json.dumps(_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("question"))),
         r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing key 'question'"),
        (json.dumps(_broken(lambda d: d["data"][2]["paragraphs"][0]["qas"][0].pop("answers"))),
         r"qas\[0\]: missing key 'answers'"),
        (json.dumps(_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].pop("text"))),
         r"qas\[0\]\.answers\[0\]: missing key 'text'"),
        (json.dumps(_broken(lambda d: d["data"][0].__setitem__("paragraphs", {}))),
         r"data\[0\]\.paragraphs: expected list, found dict"),
        (json.dumps(_broken(lambda d: d["data"][2]["paragraphs"][0]["qas"][0].__setitem__("id", "DEV_1_QUERY_0"))),
         r"duplicate question id 'DEV_1_QUERY_0'"),
    ],
)
def test_bad_files_name_the_file_and_place(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvaluationError, match=message):
        load_squad(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"cannot read SQuAD file .*missing\.json"):
        load_squad(tmp_path / "missing.json")
    path = tmp_path / "gbk.json"
    path.write_bytes(json.dumps(CMRC, ensure_ascii=False).encode("gb18030"))
    with pytest.raises(EvaluationError, match=r"gbk\.json is not UTF-8 text"):
        load_squad(path)


def test_default_index_dir_depends_on_content_leave_out_and_seed(cmrc_file: Path, tmp_path: Path) -> None:
    base = squad_index_dir(cmrc_file, 0.2, 0)
    assert re.fullmatch(r"squad-[0-9a-f]{12}", base.name) and base.parent.name == "index"
    assert squad_index_dir(cmrc_file, 0.2, 0) == base
    copy = tmp_path / "copy.json"
    copy.write_bytes(cmrc_file.read_bytes())
    assert squad_index_dir(copy, 0.2, 0) == base  # the bytes count, not the name
    assert len({base, squad_index_dir(cmrc_file, 0.2, 1), squad_index_dir(cmrc_file, 0.3, 0)}) == 3
    assert corpus_path(base) == base.parent / f"{base.name}.corpus.jsonl"


# --- the CLI with a fake pipeline ------------------------------------------------------------------


class FakeSquadRAG:
    """Retrieves the kept contexts by shared characters; answers from ANSWERS citing passage [1]."""

    def __init__(self, squad) -> None:
        self.chunks = [Chunk(f"{c.id}#0", c.id, c.text, 0, len(c.text), c.title) for c in squad.contexts]
        self.asked: list[str] = []

    def resolve_doc_id(self, doc_id: str) -> str:
        return doc_id

    def retrieve(self, question: str, top_k: int | None = None) -> list[Passage]:
        ranked = sorted(self.chunks, key=lambda c: -len(set(question) & set(c.text)))
        return [Passage(c, score=1.0 / (i + 1)) for i, c in enumerate(ranked)][:top_k]

    def ask(self, question: str, history=None, top_k: int | None = None, generator=None) -> Answer:
        self.asked.append(question)
        passages = tuple(self.retrieve(question, 2))
        text, score = ANSWERS[question]
        refused = "无法回答" in text
        citations = () if refused else (Citation(1, passages[0].doc_id, passages[0].chunk_id, passages[0].text[:4], 0, 4),)
        return Answer(question, text, citations, passages, refused, {"total_ms": 1.0},
                      score=score, candidate="" if refused else text)


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> dict:
    seen: dict = {"builds": []}

    def build(squad, index_dir, config):
        seen["builds"].append((squad, Path(index_dir)))
        seen["rag"] = FakeSquadRAG(squad)
        return {"documents": len(squad.contexts), "chunks": len(squad.contexts), "aliases": 0}

    monkeypatch.setattr(cli_eval, "build_squad_index", build)
    monkeypatch.setattr(cli_eval, "load_rag", lambda index_dir, config: seen["rag"])
    return seen


def test_cli_squad_with_fake_pipeline(tmp_path: Path, cmrc_file: Path, fake_pipeline: dict) -> None:
    out = tmp_path / "run"
    args = ["eval", "--squad", str(cmrc_file), "--leave-out", "0.34", "--seed", "0", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    squad, index_dir = fake_pipeline["builds"][0]
    assert index_dir == squad_index_dir(cmrc_file, 0.34, 0)  # default: index/squad-<hash>
    assert [c.id for c in squad.contexts] == ["DEV_1", "熊猫-3"]
    assert "2 documents, 2 chunks (1 contexts left out)" in result.output

    settings = json.loads((out / "config.json").read_text(encoding="utf-8"))["eval"]
    assert {k: settings[k] for k in ("squad_file", "leave_out", "seed", "contexts_kept", "contexts_left_out",
                                     "left_out_ids", "answerable", "unanswerable", "questions", "questions_file")} == {
        "squad_file": str(cmrc_file), "leave_out": 0.34, "seed": 0, "contexts_kept": 2, "contexts_left_out": 1,
        "left_out_ids": ["DEV_2"], "answerable": 3, "unanswerable": 2, "questions": 5, "questions_file": str(cmrc_file)}
    assert settings["index_dir"] == str(index_dir)

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    # answerable: 1898年 (right), 京师大学 for 京师大学堂 (contained: no; coverage 4/5: yes), 竹子 (right)
    # cmrc_f1: 创/建/于/1898/年 vs 1898/年 -> 4/7; 初/名/京/师/大/学 vs 京/师/大/学/堂 -> P 4/6 R 4/5 -> 8/11; 1
    expected = {"count.answerable": 3, "count.unanswerable": 2, "answer.accuracy": 2 / 3,
                "answer.coverage_accuracy": 1.0, "answer.cmrc_f1": (4 / 7 + 8 / 11 + 1) / 3,
                "refusal.recall": 0.5, "retrieval.hit@1": 1.0}
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    items = {i["id"]: i for i in map(json.loads, (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines())}
    assert items["DEV_2_QUERY_0"]["type"] == "unanswerable" and items["DEV_2_QUERY_0"]["gold_answers"] == []
    assert items["DEV_1_QUERY_1"]["metrics"]["answer.coverage_accuracy"] == 1.0
    assert items["DEV_1_QUERY_1"]["metrics"]["answer.cmrc_f1"] == pytest.approx(8 / 11)
    # risk-coverage, by score: 1898年 0.9 T, 竹子 0.8 T, 山海关 0.7 F (left out), 京师大学 0.6 T, refusal 0.1 F
    risk = {"risk_coverage.auc": 0.2 * (1 + 1 + 2 / 3 + 3 / 4 + 3 / 5), "risk_coverage.accuracy@0.5": 2 / 3,
            "risk_coverage.accuracy@0.8": 3 / 4, "risk_coverage.accuracy@1.0": 3 / 5}
    assert {k: metrics[k] for k in risk} == pytest.approx(risk)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| answer.cmrc_f1 |" in report and "](risk_coverage.png)" in report and (out / "risk_coverage.png").is_file()

    again = CliRunner().invoke(cli, args[:-1] + [str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert fake_pipeline["builds"][1][1] == index_dir  # the same index folder again
    other = CliRunner().invoke(cli, ["eval", "--squad", str(cmrc_file), "--seed", "1", "--out", str(tmp_path / "run3")])
    assert other.exit_code == 0, other.output
    assert fake_pipeline["builds"][2][1] == squad_index_dir(cmrc_file, 0.0, 1) != index_dir


def test_cli_squad_usage_errors(tmp_path: Path, cmrc_file: Path, fake_pipeline: dict) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q", "question": "问？", "answers": [], "type": "unanswerable"}) + "\n", encoding="utf-8")
    both = CliRunner().invoke(cli, ["eval", "--squad", str(cmrc_file), "--questions", str(questions)])
    assert both.exit_code == 2 and "cannot be combined" in both.output
    alone = CliRunner().invoke(cli, ["eval", "--questions", str(questions), "--leave-out", "0.2"])
    assert alone.exit_code == 2 and "only to a --squad run" in alone.output
    assert CliRunner().invoke(cli, ["eval"]).exit_code == 2
    bad = CliRunner().invoke(cli, ["eval", "--squad", str(cmrc_file), "--leave-out", "1"])
    assert bad.exit_code == 1 and "cmrc_dev.json: leave-out fraction 1.0 is outside [0, 1)" in bad.output
    assert fake_pipeline["builds"] == []
    compare = CliRunner().invoke(cli, ["eval", "--seed", "1", "compare", str(tmp_path), str(tmp_path)])
    assert compare.exit_code == 2


# --- the real build path (fake embedder) and the real extractive pipeline -------------------------


def test_cli_squad_builds_and_reuses_a_real_index(tmp_path: Path, cmrc_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.index import Index
    from rag.pipeline import RAG

    embedded: list[int] = []

    class CountingEmbedder(FakeEmbedder):
        def embed_passages(self, texts):
            embedded.append(len(texts))
            return super().embed_passages(texts)

    monkeypatch.setattr(cli_eval, "build_squad_index", lambda squad, index_dir, config: squad_mod.build_squad_index(
        squad, index_dir, config, embedder_factory=CountingEmbedder))
    monkeypatch.setattr(cli_eval, "load_rag", lambda index_dir, config: RAG(
        [Index.load(index_dir, embedding_model=FakeEmbedder.model_name)], config, embedder=FakeEmbedder()))
    toml = tmp_path / "fake.toml"
    toml.write_text(f'[embedding]\nmodel = "{FakeEmbedder.model_name}"\n', encoding="utf-8")
    index_dir = tmp_path / "idx"
    args = ["eval", "--squad", str(cmrc_file), "--leave-out", "0.34", "--index-dir", str(index_dir),
            "--config", str(toml), "--generator", "extractive"]

    first = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert embedded == [2]  # two kept contexts, one chunk each
    corpus = [json.loads(line) for line in corpus_path(index_dir).read_text(encoding="utf-8").splitlines()]
    assert [d["id"] for d in corpus] == ["DEV_1", "熊猫-3"]
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["documents"] == 2 and manifest["sources"] == [str(corpus_path(index_dir))]

    second = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert embedded == [2]  # unchanged corpus and settings: the index is reused, nothing embedded
    assert json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))["created"] == manifest["created"]

    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["count.answerable"] == 3 and metrics["count.unanswerable"] == 2
    assert metrics["retrieval.hit@1"] == 1.0  # two documents, distinct topics
    items = [json.loads(line) for line in (tmp_path / "b" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    answered = [i for i in items if i["answerable"]]
    assert [i["metrics"]["answer.cmrc_f1"] for i in answered] == [cmrc_f1(i["short_answer"], i["gold_answers"]) for i in answered]
    assert metrics["answer.cmrc_f1"] == pytest.approx(sum(i["metrics"]["answer.cmrc_f1"] for i in answered) / 3)
    assert metrics["answer.coverage_accuracy"] >= metrics["answer.accuracy"]  # a contained gold is fully covered
    config = json.loads((tmp_path / "b" / "config.json").read_text(encoding="utf-8"))
    assert config["rag"]["generation"]["backend"] == "extractive"
    assert manifest["config"]["generation"]["backend"] == "causal"  # the run's --generator is not built in


@pytest.mark.slow
def test_cli_squad_real_models_extractive(tmp_path: Path, cmrc_file: Path, default_rag) -> None:
    """The whole command unpatched: real e5 embeddings, real index build, extractive answers.

    ``default_rag`` is the fixture the other real-model tests share: it provisions the
    embedding model (and builds the default index once per session).
    """
    index_dir = tmp_path / "idx"
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["eval", "--squad", str(cmrc_file), "--index-dir", str(index_dir),
                                      "--generator", "extractive", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["documents"] == 3 and manifest["embedding"]["dimension"] == 384
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["count.answerable"] == 4 and metrics["count.unanswerable"] == 1
    assert metrics["retrieval.hit@1"] == 1.0  # three short contexts on different topics
    assert metrics["answer.accuracy"] >= 0.5 and metrics["answer.coverage_accuracy"] >= metrics["answer.accuracy"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["rag"]["generation"]["backend"] == "extractive"
    # Which answer check judged the run: the bundled one of the default generator.
    assert config["eval"]["answer_check_model"] == "rag/verify/model.json"
    assert "- answer check: `rag/verify/model.json`" in (out / "report.md").read_text(encoding="utf-8")
