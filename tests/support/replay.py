"""A replaying OpenAI-compatible server (standard library) for tests, offline runs and benchmarks.

It answers `POST /v1/chat/completions` from fixed rules — the first rule whose `match` string
occurs in the last user message gives the reply — and `POST /v1/embeddings` with
deterministic hashed bag-of-words vectors. Faults can be scripted (status codes with headers,
e.g. 429 with Retry-After, 500, a slow answer), latency can be simulated, and every request
is counted, so retries and cache hits are observable. It binds 127.0.0.1 only.

    python -m tests.support.replay --rules examples/icl/replay_fewshot_re.json --port 8011

(from the repository root: it is test tooling, not part of the installed `kgc`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import re
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once (the default 5 drops SYNs)


class ReplayServer:
    def __init__(
        self,
        rules: list[dict] | None = None,
        *,
        default: str = "",
        latency_s: float = 0.0,
        port: int = 0,
        api_key: str | None = None,
    ):
        self.rules = list(rules or [])
        self.default = default
        self.latency_s = latency_s
        self.api_key = api_key
        self.faults: deque = deque()  # (status, headers, body) or ("sleep", seconds)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", port), _handler(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail(self, status: int, headers: dict | None = None, body: Any = None) -> None:
        """The next request gets this status instead of an answer (queued, in order)."""
        self.faults.append((status, headers or {}, body))

    def stall(self, seconds: float) -> None:
        """The next request waits this long before it is answered."""
        self.faults.append(("sleep", seconds, None))

    def huge(self, size: int, *, length: bool = True) -> None:
        """The next answer is a 200 chat answer of `size` bytes, streamed (the server holds one
        chunk of it); without `length` it has no Content-Length and ends when the server closes."""
        self.faults.append(("huge", size, length))

    def trickle(self, every_s: float, *, headers: bool = False) -> None:
        """The next answer is sent one byte every `every_s` seconds: its body, or with `headers`
        its status line and headers as well."""
        self.faults.append(("trickle", every_s, headers))

    def count(self, path: str = "/v1/chat/completions") -> int:
        with self.lock:
            return sum(r["path"] == path for r in self.requests)

    # ------------------------------------------------------------------ answers
    def reply_for(self, messages: list[dict]) -> str:
        user = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        for rule in self.rules:
            if rule["match"] in user:
                return rule["reply"]
        return self.default


def embed_text(text: str, dim: int = 64) -> list[float]:
    """Hashed bag of lower-cased words, L2-normalised: similar texts → similar vectors."""
    v = [0.0] * dim
    for w in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "big")
        v[h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def _handler(server: ReplayServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms stalls)

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)

        def _send_huge(self, size: int, length: bool) -> None:
            head = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
            tail = b'"}}]}'
            pad = size - len(head) - len(tail)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if length:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            block = b"x" * (1 << 16)
            try:
                self.wfile.write(head)
                while pad > 0:
                    self.wfile.write(block[:pad])
                    pad -= len(block)
                self.wfile.write(tail)
            except OSError:  # the client stopped reading: what the test wants
                self.close_connection = True

        def _send_trickle(self, every_s: float, headers: bool) -> None:
            body = json.dumps(
                {"choices": [{"index": 0, "message": {"role": "assistant", "content": "slow"}}]}
            ).encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            self.close_connection = True
            try:
                if not headers:
                    self.wfile.write(head)
                for i in range(0 if headers else len(head), len(head) + len(body)):
                    time.sleep(every_s)
                    self.wfile.write((head + body)[i : i + 1])
            except OSError:  # the client gave up
                pass

        def do_GET(self):  # noqa: N802 - http.server naming
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "replay", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            with server.lock:
                server.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                        "t": time.monotonic(),
                    }
                )
                fault = server.faults.popleft() if server.faults else None
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._send(401, {"error": {"message": "wrong API key"}})
                return
            if fault is not None and fault[0] == "sleep":
                time.sleep(fault[1])
            elif fault is not None and fault[0] == "huge":
                self._send_huge(fault[1], fault[2])
                return
            elif fault is not None and fault[0] == "trickle":
                self._send_trickle(fault[1], fault[2])
                return
            elif fault is not None:
                status, headers, payload = fault
                self._send(status, payload or {"error": {"message": f"scripted {status}"}}, headers)
                return
            if server.latency_s:
                time.sleep(server.latency_s)
            if self.path == "/v1/embeddings":
                inputs = body.get("input")
                inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
                self._send(
                    200,
                    {
                        "object": "list",
                        "model": body.get("model", "replay"),
                        "data": [
                            {"object": "embedding", "index": i, "embedding": embed_text(t)}
                            for i, t in enumerate(inputs)
                        ],
                        "usage": {"prompt_tokens": 0, "total_tokens": 0},
                    },
                )
                return
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            text = server.reply_for(body.get("messages") or [])
            self._send(
                200,
                {
                    "id": f"chatcmpl-replay-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "replay"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                },
            )

    return Handler


def load_rules(path: str) -> tuple[list[dict], str]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    rules = data.get("rules", []) if isinstance(data, dict) else data
    default = data.get("default", "") if isinstance(data, dict) else ""
    for i, r in enumerate(rules):
        if not (
            isinstance(r, dict)
            and isinstance(r.get("match"), str)
            and isinstance(r.get("reply"), str)
        ):
            raise SystemExit(f"{path}: rule {i} must be {{'match': str, 'reply': str}}")
    return rules, default


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a dev tool
    ap = argparse.ArgumentParser(description="Replaying OpenAI-compatible server on 127.0.0.1")
    ap.add_argument(
        "--rules", required=True, help='JSON {"rules": [{match, reply}], "default": ""}'
    )
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)
    rules, default = load_rules(args.rules)
    srv = ReplayServer(rules, default=default, latency_s=args.latency, port=args.port)
    print(f"replaying {len(rules)} rules at {srv.base_url}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv._httpd.serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
