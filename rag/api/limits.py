"""Request limits: body size (413) and a per-key token-bucket rate limit (429)."""
from __future__ import annotations

import json
import math
import threading
import time

# A chat request with long history stays far below this; anything larger is a mistake or abuse.
DEFAULT_MAX_BODY_BYTES = 1_000_000
#: Document uploads (``POST /v1/kbs/NAME/documents``) may be larger than questions.
DEFAULT_MAX_UPLOAD_BYTES = 50_000_000


class RateLimiter:
    """Token bucket per client: ``per_minute`` requests a minute, bursts up to ``burst``."""

    def __init__(self, per_minute: float, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute)))
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Spend one token; returns 0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` (``upload_bytes`` for document uploads)
    get 413 with a JSON message before any route runs."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES, prefix: str = "/v1",
                 upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes
        self.prefix = prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        upload = scope.get("method") == "POST" and scope["path"].rstrip("/").endswith("/documents")
        limit = self.upload_bytes if upload else self.max_bytes
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(send, limit, upload)
            return
        # Read the whole body (bounded), then replay it: chunked uploads are limited too.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await self._too_large(send, limit, upload)
                return
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send, limit: int, upload: bool) -> None:
        fix = "send fewer or smaller files per request" if upload else "send a shorter question or less history"
        message = f"the request body is over {limit} bytes; {fix}"
        body = json.dumps({"error": {"message": message, "type": "request_too_large", "code": 413}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def retry_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
