"""`rag eval`: offline evaluation runs and run comparison.

Examples:
    rag eval --questions eval/dev_questions.jsonl --retrieval-only
    rag eval --questions eval/dev_questions.jsonl --generator extractive --name extractive
    rag eval --squad cmrc2018_dev.json --leave-out 0.2 --seed 0 --generator extractive
    rag eval compare eval/runs/20250101-120000-retrieval eval/runs/20250102-090000-retrieval
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rag.config import Config, default_index_dir

if TYPE_CHECKING:
    from rag.evaluation.squad import SquadSet

logger = logging.getLogger(__name__)

HEADLINE = (
    "retrieval.hit@1", "retrieval.hit@5", "retrieval.mrr@10", "answer.accuracy", "answer.f1", "answer.cmrc_f1",
    "answer.coverage_accuracy", "risk_coverage.auc",
    "citation.precision", "citation.recall", "refusal.recall", "refusal.false_rate",
    "latency.retrieve.p50_ms", "latency.total.p95_ms",
)


def resolve_config(index_dir: Path, config_path: str | None, generation: dict[str, Any]) -> Config:
    """The run's configuration: the TOML file if given, else the settings the
    index was built with for reading, chunking and embedding and today's defaults
    for searching and answering (as `RAG.load` does); then the command-line overrides."""
    if config_path:
        base = Config.from_toml(config_path)
    else:
        manifest = index_dir / "manifest.json"
        built = json.loads(manifest.read_text(encoding="utf-8")).get("config") if manifest.exists() else None
        base = Config().with_build_settings(built) if built else Config()
    return base.with_overrides(generation=generation)


def load_rag(index_dir: Path, config: Config):
    """Build the real pipeline (tests replace this with a fake)."""
    from rag.pipeline import RAG

    return RAG.load(index_dir, config=config)


def build_squad_index(squad: "SquadSet", index_dir: Path, config: Config) -> dict[str, int]:
    """Write a SQuAD set's corpus and build or reuse its index (tests replace or wrap this)."""
    from rag.evaluation.squad import build_squad_index as build

    return build(squad, index_dir, config)


@click.group("eval", invoke_without_command=True)
@click.option("--questions", "questions_path", type=click.Path(exists=True, dir_okay=False), help="Question JSONL file.")
@click.option("--squad", "squad_path", type=click.Path(exists=True, dir_okay=False),
              help="SQuAD / CMRC 2018 JSON file: its contexts become the corpus, its questions the set.")
@click.option("--leave-out", type=float, default=None,
              help="With --squad: share of contexts removed from the corpus, their questions unanswerable (default 0).")
@click.option("--seed", type=int, default=None, help="With --squad: seed of the --leave-out choice (default 0).")
@click.option("--index-dir", default=None, help="Index folder (default: index/default; with --squad index/squad-<hash>).")
@click.option("--config", "config_path", default=None, help="TOML config file (default: the index's build config).")
@click.option("--generator", default=None, help="Generator backend: causal, seq2seq or extractive.")
@click.option("--model", default=None, help="Generator model name or folder.")
@click.option("--top-k", type=int, default=None, help="Passages given to the generator (default: from config).")
@click.option("--retrieval-only", is_flag=True, help="Score retrieval only; no generator is loaded.")
@click.option("--name", default=None, help="Run name, appended to the run folder's timestamp.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run folder (default: eval/runs/<timestamp>-<name>).")
@click.option("--allow-fallback", is_flag=True,
              help="Score the run even if the generator cannot load and falls back to the extractive one.")
@click.pass_context
def eval_group(
    ctx: click.Context, questions_path: str | None, squad_path: str | None, leave_out: float | None, seed: int | None,
    index_dir: str | None, config_path: str | None,
    generator: str | None, model: str | None, top_k: int | None, retrieval_only: bool, name: str | None, out_dir: str | None,
    allow_fallback: bool,
) -> None:
    """Evaluate the pipeline on a question set and write a run folder.

    Every question goes through the same `RAG.ask` the UI and API use (with
    --retrieval-only, only `RAG.retrieve`). The run folder holds config.json,
    metrics.json, predictions.jsonl and report.md with plots.

    With --squad, the file's contexts are indexed into index/squad-<hash> (or
    --index-dir), reused while the file, --leave-out and --seed are unchanged.
    """
    run_options = (questions_path, squad_path, leave_out, seed, index_dir, config_path, generator, model, top_k, name, out_dir)
    if ctx.invoked_subcommand is not None:
        if retrieval_only or any(v is not None for v in run_options):
            raise click.UsageError(f"run options cannot be combined with `rag eval {ctx.invoked_subcommand}`")
        return
    if questions_path and squad_path:
        raise click.UsageError("--questions and --squad cannot be combined; give one question source")
    if questions_path is None and squad_path is None:
        raise click.UsageError("--questions or --squad is required (for example --questions eval/dev_questions.jsonl)")
    if squad_path is None and (leave_out is not None or seed is not None):
        raise click.UsageError("--leave-out and --seed apply only to a --squad run")
    if retrieval_only and (generator or model or top_k):
        raise click.UsageError("--generator, --model and --top-k do not apply to a --retrieval-only run")
    from rag.evaluation.runner import default_run_dir, load_questions, run_eval

    settings: dict[str, Any] = {}
    if squad_path:
        from rag.evaluation.squad import load_squad, squad_index_dir

        leave_out, seed = leave_out or 0.0, seed or 0
        squad = load_squad(squad_path).leave_out(leave_out, seed)
        questions = list(squad.questions)
        index_path = Path(index_dir) if index_dir else squad_index_dir(squad_path, leave_out, seed)
        settings = {"squad_file": str(squad_path), "leave_out": leave_out, "seed": seed, **squad.summary()}
    else:
        questions = load_questions(questions_path)
        index_path = Path(index_dir) if index_dir else default_index_dir()
    config = resolve_config(index_path, config_path, {"backend": generator, "model": model})
    if squad_path:
        # Built without this run's generator options, so the index's stored config
        # does not carry them into later runs that do not ask for them.
        counts = build_squad_index(squad, index_path, resolve_config(index_path, config_path, {}))
        click.echo(f"index {index_path}: {counts['documents']} documents, {counts['chunks']} chunks "
                   f"({settings['contexts_left_out']} contexts left out)")
    name = name or ("retrieval" if retrieval_only else config.generation.backend)
    run_dir = Path(out_dir) if out_dir else default_run_dir(name)
    rag = load_rag(index_path, config)
    settings = {"name": name, "questions_file": str(questions_path or squad_path), "index_dir": str(index_path),
                "started": datetime.now().isoformat(timespec="seconds"), **settings}
    rag_config = getattr(rag, "config", None)
    result = run_eval(
        rag, questions, run_dir, retrieval_only=retrieval_only, top_k=top_k, settings=settings,
        config=rag_config.to_dict() if isinstance(rag_config, Config) else config.to_dict(),
        allow_fallback=allow_fallback,
    )
    click.echo(f"{len(questions)} questions in {result.wall_s:.1f}s; run folder {result.run_dir}")
    for key in HEADLINE:
        if key in result.metrics:
            click.echo(f"  {key:<26} {result.metrics[key]:.4g}")


@eval_group.command("compare")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--by-type", is_flag=True, help="Also list the by_type.* metrics.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare(run_a: str, run_b: str, by_type: bool, as_json: bool) -> None:
    """Metric deltas from RUN_A to RUN_B and the questions that changed."""
    from rag.evaluation.compare import compare_runs, comparison_to_dict, format_comparison

    result = compare_runs(run_a, run_b)
    if as_json:
        click.echo(json.dumps(comparison_to_dict(result), ensure_ascii=False, indent=2))
    else:
        click.echo(format_comparison(result, include_by_type=by_type))
