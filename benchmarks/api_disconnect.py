"""How fast a real generation stops when a streaming client goes away.

Against a running `rag serve` (default http://127.0.0.1:7860, the real generator):
stream a chat completion, close the connection after the first draft piece, then
poll /healthz until no answer is generating. (A close during prompt processing,
before any piece, is noticed only at the first piece.)
Prints, per question, the seconds from the close to the server's generation stopping,
beside the time a full answer to the same question takes (the baseline, same run).

    rag serve --port 7872 &
    python benchmarks/api_disconnect.py --url http://127.0.0.1:7872
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

QUESTIONS = ["腾讯基金会计划出资多少？", "北京幸福公益基金会分享了什么？", "中国社会组织参与国际抗疫合作的案例有哪些？",
             "深圳市猛犸公益基金会向哪里捐赠了火眼实验室？", "武汉疫情期间有哪些社会组织提供了心理援助？"]


def generating(client: httpx.Client, url: str) -> int:
    return client.get(f"{url}/healthz").json()["answers"]["generating"]


def wait_idle(client: httpx.Client, url: str, limit: float = 120.0) -> float:
    start = time.perf_counter()
    while generating(client, url) and time.perf_counter() - start < limit:
        time.sleep(0.02)
    return time.perf_counter() - start


def one(client: httpx.Client, url: str, question: str) -> dict:
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"draft"' in line:
                break
        piece_s = time.perf_counter() - start
    stop_s = wait_idle(client, url)  # from the close (the with-block's exit) to no answer generating
    full_start = time.perf_counter()
    client.post(f"{url}/v1/chat/completions", json={**body, "stream": False}).raise_for_status()
    return {"question": question, "closed_after_s": round(piece_s, 2), "stopped_within_s": round(stop_s, 2),
            "full_answer_s": round(time.perf_counter() - full_start, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    args = ap.parse_args()
    with httpx.Client(timeout=120) as client:
        wait_idle(client, args.url)
        rows = [one(client, args.url, q) for q in QUESTIONS]
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    stops = [r["stopped_within_s"] for r in rows]
    print(f"stopped within: median {statistics.median(stops):.2f} s, max {max(stops):.2f} s; "
          f"full answers: median {statistics.median(r['full_answer_s'] for r in rows):.2f} s")


if __name__ == "__main__":
    main()
