"""Load test: concurrent chat sessions against `rag serve` over its ``ask`` API.

Starts the app on loopback in a subprocess, warms it up, then runs
``--sessions`` concurrent sessions (one `gradio_client.Client` each) of
``--questions`` questions each. Every session's questions differ from every
other's and include a follow-up ("她…"), so an answer that carries another
session's question or history is caught.

Checks: every request answered (no errors), each answer belongs to its own
question, and the server's RSS after the run is within ``--max-growth`` of its
RSS after warm-up. Reports requests served, p50/p95 latency and errors, and
writes ``benchmarks/results/load_test.json``.

Examples:
    python benchmarks/load_test.py                              # 8 sessions x 5 questions, extractive
    python benchmarks/load_test.py --sessions 16 --questions 10
    python benchmarks/load_test.py --backend causal --sessions 8 --questions 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FOLLOW_UP = "她分享了什么？"  # rewritten only when a history names someone: there is none over the API
FALLBACK_QUESTIONS = [
    "北京幸福公益基金会的理事长是谁？",
    "腾讯基金会计划出资多少？",
    "据基金会中心网统计，2018年全国共有多少家基金会关注精神卫生领域？",
    "中国烹饪协会发布了什么倡议？",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in open(f"/proc/{pid}/status", encoding="ascii"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    lo, hi = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def dev_questions(limit: int) -> list[str]:
    path = ROOT / "eval" / "dev_questions.jsonl"
    questions: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                questions.append(json.loads(line)["question"])
    questions = questions or FALLBACK_QUESTIONS
    return [questions[i % len(questions)] for i in range(limit)]


class Server:
    """`rag serve` in a subprocess on loopback, stopped on exit."""

    def __init__(self, index_dir: Path, backend: str, port: int, data_dir: Path, start_timeout_s: float = 300) -> None:
        rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or shutil.which("rag")
        cmd = [rag] if rag else [sys.executable, "-c", "from rag.cli import main; main()"]
        cmd += ["serve", "--index-dir", str(index_dir), "--backend", backend, "--port", str(port), "--data-dir", str(data_dir)]
        self.url = f"http://127.0.0.1:{port}/"
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, WENYUAN_NO_PROGRESS="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready(start_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout_s:.0f}s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass
class Session:
    """One chat session: its own client, its own questions."""

    number: int
    questions: list[str]
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def run(self, url: str, backend: str, top_k: int, start: threading.Barrier | None = None) -> None:
        from gradio_client import Client

        try:
            client = Client(url, verbose=False)
        except Exception as e:  # noqa: BLE001 - report any failure as an error of this session
            self.errors.append(f"session {self.number}: cannot connect: {e}")
            return
        if start is not None:
            start.wait()
        for question in self.questions:
            t0 = time.perf_counter()
            try:
                result = client.predict(question, top_k, backend, api_name="/ask")
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"session {self.number}: {question!r}: {type(e).__name__}: {e}")
                continue
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            self.answers.append(result)
            problem = check_answer(question, result)
            if problem:
                self.errors.append(f"session {self.number}: {question!r}: {problem}")


def check_answer(question: str, result: Any) -> str:
    """Empty when ``result`` is a complete answer to ``question`` and to nothing else."""
    from rag.questions import clean_question

    if not isinstance(result, dict):
        return f"not an answer payload: {result!r:.200}"
    if result.get("question") != clean_question(question):
        return f"answer is for another question: {result.get('question')!r}"
    if result.get("standalone_question") != result.get("question"):
        return f"rewritten with a history this session never sent: {result.get('standalone_question')!r}"
    if not result.get("answer"):
        return "empty answer"
    if not result.get("refused"):
        for c in result.get("citations", []):
            passage = result["passages"][c["marker"] - 1]
            if passage["text"][c["start"] : c["end"]] != c["quote"]:
                return f"citation [{c['marker']}] does not quote its passage"
    return ""


def run_sessions(url: str, sessions: int, questions: int, backend: str, top_k: int, offset: int = 0) -> list[Session]:
    pool = dev_questions(offset + sessions * (questions - 1))[offset:]
    plan = [Session(n, [*pool[n * (questions - 1) : (n + 1) * (questions - 1)], FOLLOW_UP][:questions]) for n in range(sessions)]
    start = threading.Barrier(sessions)
    threads = [threading.Thread(target=s.run, args=(url, backend, top_k, start), daemon=True) for s in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    return plan


def load_test(
    index_dir: str | Path = ROOT / "index" / "default",
    sessions: int = 8,
    questions: int = 5,
    backend: str = "extractive",
    top_k: int = 5,
    warmup_rounds: int = 2,
    max_growth: float = 0.10,
) -> dict[str, Any]:
    """Run the load test and return its report (``report["ok"]`` says whether every check passed)."""
    with tempfile.TemporaryDirectory(prefix="wenyuan-load-") as data_dir:
        started = time.perf_counter()
        server = Server(Path(index_dir), backend, free_port(), Path(data_dir))
        try:
            start_s = time.perf_counter() - started
            rss_start = server.rss_mb()
            # Warm-up: the same concurrent shape as the run, so thread pools and caches exist before measuring.
            warm = [s for r in range(warmup_rounds) for s in run_sessions(server.url, sessions, 2, backend, top_k, offset=60 + r)]
            rss_warm = server.rss_mb()
            t0 = time.perf_counter()
            plan = run_sessions(server.url, sessions, questions, backend, top_k)
            wall_s = time.perf_counter() - t0
            rss_after = server.rss_mb()
        finally:
            server.stop()
    latencies = [x for s in plan for x in s.latencies_ms]
    errors = [e for s in plan for e in s.errors]
    warm_errors = [e for s in warm for e in s.errors]
    growth = rss_after / rss_warm - 1
    expected = sessions * questions
    report = {
        "backend": backend,
        "sessions": sessions,
        "questions_per_session": questions,
        "requests": expected,
        "served": len(latencies),
        "errors": len(errors),
        "refused": sum(bool(a.get("refused")) for s in plan for a in s.answers),
        "latency_ms": {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1), "max": round(max(latencies, default=0), 1)},
        "throughput_rps": round(len(latencies) / wall_s, 2) if wall_s else None,
        "wall_s": round(wall_s, 2),
        "server_start_s": round(start_s, 1),
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(rss_warm, 1), "after_run": round(rss_after, 1)},
        "rss_growth": round(growth, 4),
        "max_growth": max_growth,
        "error_samples": (errors + warm_errors)[:10],
    }
    report["ok"] = not errors and not warm_errors and len(latencies) == expected and growth <= max_growth
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-dir", default=str(ROOT / "index" / "default"))
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--backend", default="extractive", choices=["extractive", "causal", "seq2seq"])
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (0.10 = 10%%)")
    parser.add_argument("--out", default=str(RESULTS / "load_test.json"))
    args = parser.parse_args(argv)
    report = load_test(args.index_dir, args.sessions, args.questions, args.backend, args.top_k, max_growth=args.max_growth)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    lat, rss = report["latency_ms"], report["rss_mb"]
    print(
        f"{report['served']}/{report['requests']} requests served by {report['sessions']} sessions ({report['backend']}), "
        f"{report['errors']} errors, {report['refused']} refusals\n"
        f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms; {report['throughput_rps']} req/s\n"
        f"server RSS {rss['after_warmup']} MB after warm-up -> {rss['after_run']} MB after the run "
        f"({report['rss_growth']:+.1%}, limit {report['max_growth']:.0%})\n"
        f"{'OK' if report['ok'] else 'FAILED'}; report in {args.out}"
    )
    for e in report["error_samples"]:
        print("  ", e)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
