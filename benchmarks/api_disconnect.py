"""How fast a real generation stops when a streaming client goes away.

Against a running `rag serve` (default http://127.0.0.1:7860, the real generator):
stream a chat completion and close the connection, then poll /healthz until no
answer is generating. Two moments of closing, each question both ways:
- ``mid-stream``: after the first draft piece arrives;
- ``prefill``: 0.3 s after sending, while the model still reads the prompt and no
  byte has come back (the server sends its headers with the first piece).
Prints, per question, the seconds from the close to the server's generation stopping,
beside the time a full answer to the same question takes (the baseline, same run),
and writes benchmarks/results/api_disconnect.json.

    rag serve --port 7872 &
    python benchmarks/api_disconnect.py --url http://127.0.0.1:7872
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

QUESTIONS = ["腾讯基金会计划出资多少？", "北京幸福公益基金会分享了什么？", "中国社会组织参与国际抗疫合作的案例有哪些？",
             "深圳市猛犸公益基金会向哪里捐赠了火眼实验室？", "武汉疫情期间有哪些社会组织提供了心理援助？"]


def generating(client: httpx.Client, url: str) -> int:
    return client.get(f"{url}/healthz").json()["answers"]["generating"]


def wait_idle(client: httpx.Client, url: str, limit: float = 120.0) -> float:
    start = time.perf_counter()
    while generating(client, url) and time.perf_counter() - start < limit:
        time.sleep(0.02)
    return time.perf_counter() - start


PREFILL_CLOSE_S = 0.3


def close_mid_stream(url: str, body: dict) -> float:
    """Stream until the first draft piece, then close; seconds from sending to the close."""
    start = time.perf_counter()
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"draft"' in line:
                break
    return time.perf_counter() - start


def close_in_prefill(url: str, body: dict) -> float:
    """Send, and close the connection PREFILL_CLOSE_S later, before any byte comes back."""
    start = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(120, read=PREFILL_CLOSE_S)) as client:
            client.post(f"{url}/v1/chat/completions", json=body)
        raise SystemExit("the server answered within the prefill window; raise PREFILL_CLOSE_S's budget or use a longer question")
    except httpx.ReadTimeout:
        pass  # the with-block closed the connection
    return time.perf_counter() - start


def one(client: httpx.Client, url: str, question: str) -> dict:
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": question}]}
    row: dict = {"question": question}
    for mode, close in (("mid_stream", close_mid_stream), ("prefill", close_in_prefill)):
        wait_idle(client, url)
        row[f"{mode}_closed_after_s"] = round(close(url, body), 2)
        row[f"{mode}_stopped_within_s"] = round(wait_idle(client, url), 2)  # from the close to no answer generating
    full_start = time.perf_counter()
    full = client.post(f"{url}/v1/chat/completions", json={**body, "stream": False})
    full.raise_for_status()
    row["full_answer_s"] = round(time.perf_counter() - full_start, 2)
    row["prompt_tokens"] = full.json()["usage"]["prompt_tokens"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    args = ap.parse_args()
    with httpx.Client(timeout=120) as client:
        wait_idle(client, args.url)
        rows = [one(client, args.url, q) for q in QUESTIONS]
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    summary = {}
    for mode in ("mid_stream", "prefill"):
        stops = [r[f"{mode}_stopped_within_s"] for r in rows]
        summary[mode] = {"median_s": round(statistics.median(stops), 2), "max_s": max(stops)}
        print(f"{mode}: stopped within median {summary[mode]['median_s']:.2f} s, max {max(stops):.2f} s")
    summary["full_answer_median_s"] = round(statistics.median(r["full_answer_s"] for r in rows), 2)
    print(f"full answers: median {summary['full_answer_median_s']:.2f} s")
    write_results("api_disconnect", rows, summary=summary, url=args.url)


if __name__ == "__main__":
    main()
