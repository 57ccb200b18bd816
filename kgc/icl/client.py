"""The one client for OpenAI-compatible endpoints: chat completions and embeddings.

Both `kgc icl` (through `ChatClient`) and the extraction engine `kgc.openai_engine.OpenAIEngine`
(a thin adapter over `ChatClient`) send their requests here, so there is one HTTP call, one
retry policy and one `Retry-After` parser:

- standard-library HTTP (`urllib`, proxies from the environment honoured): no extra package,
  usable from Ray Data actors and Serve replicas;
- every attempt bounded: one deadline of `timeout_s` for the whole attempt (connect, headers,
  body; a server trickling bytes cannot hold it longer) and a cap on the answer's size
  (`max_response_bytes`, read in chunks: a huge body is refused, not buffered);
- retries with exponential backoff and jitter on 429, 408/409, 5xx, timeouts and
  connection errors; a server's `Retry-After` (seconds, HTTP date or `retry-after-ms`) is
  honoured, capped at `max_backoff_s`; 401/403/404 stop the run at once (every request
  would fail the same way), other 4xx become that request's error;
- requests-per-minute and tokens-per-minute limits (evenly paced, thread-safe);
- a response cache on disk keyed by a hash of base_url + model + messages + generation
  parameters, so a rerun costs nothing; failures are never cached;
- `chat_many`: a thread pool, results in the prompts' order (Ray Data fan-out for large files
  is in `kgc.icl.runner`).

The API key comes from the environment variable `api_key_env`, never from a file, and is
neither logged nor written to the cache; without a key no Authorization header is sent.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import http.client
import io
import json
import os
import random
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from kgc.errors import KgcError
from kgc.icl.config import ClientConfig

RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
FATAL_STATUS = {
    401: "the server refused the API key",
    403: "the API key may not use this model or endpoint",
    404: "the server does not know this model or path",
}
CACHE_VERSION = 1
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class ChatParams:
    """Generation parameters that go into the request (and into the cache key)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    salt: str = ""  # distinguishes deliberate repeats of one prompt (sampling rounds)
    # structured output, e.g. {"type": "json_schema", ...} (the extraction engine's schemas)
    response_format: dict | None = field(default=None, hash=False)

    def request_fields(self) -> dict:
        out: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.stop:
            out["stop"] = list(self.stop)
        if self.seed is not None:
            out["seed"] = self.seed
        if self.response_format:
            out["response_format"] = self.response_format
        return out


@dataclass
class Completion:
    text: str = ""
    error: str | None = None
    cached: bool = False
    attempts: int = 0  # HTTP requests made for this prompt (0 for a cache hit)
    usage: dict | None = None


@dataclass
class _Attempt:
    """What one failed HTTP attempt tells the retry loop."""

    retry: bool
    message: str
    retry_after: float | None = None
    fatal: bool = False


class BadResponse(Exception):
    """A 200 answer that is not the JSON the endpoint should send (never retried)."""


class ResponseTooLarge(BadResponse):
    """An answer larger than `max_response_bytes` (never retried: it would be as large again)."""


_CHUNK = 1 << 16
_ERROR_BODY_BYTES = 1 << 16  # of an error answer only the message is kept (300 characters)


class _DeadlineIO(io.RawIOBase):
    """The socket's reads under one deadline: before each read the socket timeout becomes the
    time left, so a server sending a byte a second cannot stretch an attempt past it (a plain
    socket timeout bounds each read, not their sum)."""

    def __init__(self, sock, deadline: float):
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the attempt's deadline passed")
        self._sock.settimeout(left)
        return self._raw.readinto(b)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, deadline: float, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader made by HTTPResponse; ours bounds the status line,
        self.fp = io.BufferedReader(_DeadlineIO(sock, deadline))  # the headers and the body


class _Deadlined:
    """An HTTP(S) connection whose whole exchange ends `timeout` seconds after it is made."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t = self.timeout
        deadline = time.monotonic() + t if isinstance(t, (int, float)) else float("inf")
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)


class _DeadlineHTTPConnection(_Deadlined, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_Deadlined, http.client.HTTPSConnection):
    pass


_DEADLINED = {
    http.client.HTTPConnection: _DeadlineHTTPConnection,
    http.client.HTTPSConnection: _DeadlineHTTPSConnection,
}


class _DeadlineHandlers:
    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_DEADLINED.get(http_class, http_class), req, **kwargs)


class _HTTPHandler(_DeadlineHandlers, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineHandlers, urllib.request.HTTPSHandler):
    pass


def _read_capped(resp, limit: int, what: str, setting: str) -> bytes:
    """The body, read in chunks; `ResponseTooLarge` as soon as it passes `limit` bytes."""

    def too_large(size: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"the answer from {what} is {size} bytes, over {setting} ({limit} bytes); "
            f"raise {setting} if the endpoint's answers are meant to be this large"
        )

    declared = resp.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(declared.strip())
    parts, size = [], 0
    while chunk := resp.read(min(_CHUNK, limit + 1 - size)):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large("more than")
    return b"".join(parts)


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate: one token per CJK character, one per 4 other characters."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def messages_tokens(messages: Sequence[dict]) -> int:
    return sum(4 + estimate_tokens(str(m.get("content", ""))) for m in messages) + 2


def request_key(base_url: str, model: str, kind: str, payload: Any) -> str:
    """The cache key: SHA-256 of the endpoint, the model and everything the request sends."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "base_url": base_url.rstrip("/"),
            "model": model,
            "kind": kind,
            "payload": payload,
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """One JSON file per key under `root/<2 hex>/<key>.json`, written atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self._path(key)
        try:
            value = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent or damaged: a miss, the request is made again
        return value if isinstance(value, dict) and value.get("key") == key else None

    def put(self, key: str, value: dict) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=str(p.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({**value, "key": key}, fh, ensure_ascii=False)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class Pacer:
    """Spaces work evenly to at most `per_minute` units a minute (GCRA, no burst).

    `reserve(cost)` books the next free slot and returns how long the caller must wait; it is
    thread-safe and callers sleep outside the lock, so concurrent requests queue in order.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.interval = 60.0 / per_minute
        self.clock = clock
        self.tat = float("-inf")  # theoretical arrival time of the next unit
        self.lock = threading.Lock()

    def reserve(self, cost: float = 1.0) -> float:
        with self.lock:
            now = self.clock()
            start = max(self.tat, now)
            self.tat = start + cost * self.interval
            return start - now

    def adjust(self, delta_cost: float) -> None:
        """Correct a reservation once the real cost is known (e.g. tokens used)."""
        with self.lock:
            self.tat += delta_cost * self.interval


class ChatClient:
    """Chat completions and embeddings with retries, rate limits and a disk cache.

    `section` names the configuration section in error messages (`client` for `kgc icl`,
    `engine` when `OpenAIEngine` drives this client).
    """

    def __init__(
        self,
        cfg: ClientConfig,
        *,
        limit_share: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        section: str = "client",
    ):
        self.cfg = cfg
        self.section = section
        self.base_url = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "")
        if not key and not cfg.allow_no_key:
            raise KgcError(
                f"environment variable {cfg.api_key_env} ({section}.api_key_env) is not set; "
                f"export {cfg.api_key_env}=<your key> (keys never go in config files), or set "
                f"{section}.allow_no_key=true for a local server without authentication"
            )
        self._api_key = key
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.cache = ResponseCache(cfg.cache_dir) if cfg.cache_dir else None
        share = max(1e-9, limit_share)
        self.rpm = (
            Pacer(cfg.requests_per_minute * share, clock) if cfg.requests_per_minute else None
        )
        self.tpm = Pacer(cfg.tokens_per_minute * share, clock) if cfg.tokens_per_minute else None
        self.stats: Counter = Counter()
        self._stats_lock = threading.Lock()
        # urlopen's handlers with one deadline per attempt (proxies from the environment, as
        # urlopen's own opener)
        self._opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)

    # ------------------------------------------------------------------ plumbing
    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    def _post(self, path: str, payload: dict) -> dict:
        """One HTTP attempt: POST JSON to `base_url + path`, the decoded JSON answer back.
        Raises urllib/socket errors (classified by `_classify`) or `BadResponse`."""
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        setting = (
            f"{self.section}.max_response_bytes"
            if self.section == "client"
            else "the client's max_response_bytes"
        )
        with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
            raw = _read_capped(resp, self.cfg.max_response_bytes, self.base_url + path, setting)
        try:
            out = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadResponse(
                f"the answer from {self.base_url}{path} is not JSON: {raw[:200]!r}"
            ) from None
        if not isinstance(out, dict):
            raise BadResponse(f"the answer from {self.base_url}{path} is not a JSON object")
        return out

    def _pace(self, tokens: int) -> None:
        wait = 0.0
        if self.rpm is not None:
            wait = max(wait, self.rpm.reserve(1))
        if self.tpm is not None:
            wait = max(wait, self.tpm.reserve(tokens))
        if wait > 0:
            self._count("rate_limit_waits")
            self.sleep(wait)

    def _classify(self, exc: Exception) -> _Attempt:
        if isinstance(exc, urllib.error.HTTPError):  # before URLError: it is one
            status = exc.code
            msg = f"HTTP {status} from {self.base_url}: {_detail(exc)}"
            if status in FATAL_STATUS:
                return _Attempt(False, f"{msg} ({FATAL_STATUS[status]})", fatal=True)
            if status in RETRY_STATUS or status >= 500:
                return _Attempt(True, msg, retry_after(exc.headers))
            return _Attempt(False, msg)
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
            return _Attempt(
                True,
                f"timed out after {self.cfg.timeout_s} s ({self.section}.timeout_s, the whole "
                f"attempt; {self.base_url})",
            )
        if isinstance(exc, (urllib.error.URLError, http.client.HTTPException, OSError)):
            return _Attempt(True, f"cannot reach {self.base_url}: {reason}")
        if isinstance(exc, BadResponse):
            return _Attempt(False, str(exc)[:500])
        return _Attempt(False, f"{type(exc).__name__}: {exc}"[:500])

    def _with_retries(self, call: Callable[[], Any], tokens: int) -> tuple[Any, int, str | None]:
        """(result or None, attempts, error)."""
        last = ""
        attempts = 0
        for attempt in range(self.cfg.max_retries + 1):
            attempts = attempt + 1
            self._pace(tokens)
            self._count("http_requests")
            try:
                return call(), attempt + 1, None
            except Exception as exc:  # noqa: BLE001 - classified below
                info = self._classify(exc)
            last = info.message
            if info.fatal:
                sec = self.section
                raise KgcError(
                    f"{info.message}. Check {self.cfg.api_key_env}, {sec}.base_url "
                    f"({self.base_url}) and {sec}.model ({self.cfg.model!r})."
                )
            if not info.retry or attempt == self.cfg.max_retries:
                break
            self._count("retries")
            if info.retry_after is not None:
                delay = min(info.retry_after, self.cfg.max_backoff_s)
            else:
                base = min(self.cfg.backoff_s * (2**attempt), self.cfg.max_backoff_s)
                delay = base * (0.5 + 0.5 * self.rng.random())
            self.sleep(delay)
        self._count("failures")
        return None, attempts, last

    # ------------------------------------------------------------------ chat
    def chat_key(self, messages: Sequence[dict], params: ChatParams) -> str:
        payload = {"messages": list(messages), **params.request_fields(), "salt": params.salt}
        return request_key(self.base_url, self.cfg.model, "chat", payload)

    def chat(self, messages: Sequence[dict], params: ChatParams) -> Completion:
        """One completion; a failed request is returned with its error, never raised
        (except the fatal 401/403/404, which would fail every request)."""
        messages = list(messages)
        if self.cfg.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.cfg.system_prompt}, *messages]
        key = self.chat_key(messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("text"), str):
                self._count("cache_hits")
                return Completion(hit["text"], cached=True, usage=hit.get("usage"))
        tokens = messages_tokens(messages) + params.max_tokens

        body = {"model": self.cfg.model, "messages": messages, **params.request_fields()}
        resp, attempts, error = self._with_retries(
            lambda: self._post("/chat/completions", body), tokens
        )
        if error is not None:
            return Completion("", error=error, attempts=attempts)
        try:
            message = resp["choices"][0]["message"]
            text = message["content"]
        except (KeyError, IndexError, TypeError):
            self._count("failures")
            return Completion("", error="the response has no choices[0].message", attempts=attempts)
        if not isinstance(text, str):  # null (a refusal, a tool call): an error, never cached
            self._count("failures")
            why = message.get("refusal") if isinstance(message, dict) else None
            finish = resp["choices"][0].get("finish_reason")
            return Completion(
                "",
                error=(
                    f"the response's choices[0].message.content is "
                    f"{json.dumps(text)[:100]}, not text (finish_reason {finish!r}"
                    + (f", refusal {str(why)[:200]!r}" if why else "")
                    + ")"
                ),
                attempts=attempts,
            )
        usage = _usage(resp)
        if self.tpm is not None and usage and usage.get("total_tokens"):
            self.tpm.adjust(usage["total_tokens"] - tokens)
        if self.cache is not None:
            self.cache.put(
                key,
                {
                    "kind": "chat",
                    "model": self.cfg.model,
                    "base_url": self.base_url,
                    "text": text,
                    "usage": usage,
                    "created": int(time.time()),
                },
            )
        return Completion(text, attempts=attempts, usage=usage)

    def chat_many(
        self,
        prompts: Sequence[Sequence[dict]],
        params: ChatParams | Sequence[ChatParams],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Completion]:
        """Completions in the prompts' order, `concurrency` requests in flight."""
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError("one ChatParams per prompt, or one for all")
        done = [0]
        lock = threading.Lock()

        def one(i: int) -> Completion:
            c = self.chat(prompts[i], plist[i])
            if progress is not None:
                with lock:
                    done[0] += 1
                    progress(done[0], len(prompts))
            return c

        if len(prompts) <= 1 or self.cfg.concurrency == 1:
            return [one(i) for i in range(len(prompts))]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(prompts))) as pool:
            return list(pool.map(one, range(len(prompts))))

    # ------------------------------------------------------------------ embeddings
    def embed(self, texts: Sequence[str], model: str | None = None) -> list[list[float]]:
        """One vector per text (cached per text); raises KgcError when the endpoint fails."""
        model = model or self.cfg.embedding_model
        if not model:
            raise KgcError("client.embedding_model is not set")
        out: list[list[float] | None] = [None] * len(texts)
        keys = [request_key(self.base_url, model, "embedding", t) for t in texts]
        todo = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None and isinstance(hit.get("vector"), list):
                out[i] = hit["vector"]
                self._count("cache_hits")
            else:
                todo.append(i)
        for start in range(0, len(todo), 128):
            idx = todo[start : start + 128]
            batch = [texts[i] for i in idx]

            body = {"model": model, "input": batch, "encoding_format": "float"}
            resp, _attempts, error = self._with_retries(
                lambda body=body: self._post("/embeddings", body),
                sum(estimate_tokens(t) for t in batch),
            )
            if error is not None:
                raise KgcError(f"embeddings with client.embedding_model={model!r}: {error}")
            try:
                data = sorted(resp["data"], key=lambda d: d["index"])
                vectors = [[float(x) for x in d["embedding"]] for d in data]
            except (KeyError, TypeError, ValueError) as exc:
                raise KgcError(
                    f"the embeddings endpoint at {self.base_url} sent an unexpected answer: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            if len(vectors) != len(idx):
                raise KgcError(
                    f"the embeddings endpoint returned {len(vectors)} vectors for {len(idx)} texts"
                )
            for i, vec in zip(idx, vectors):
                out[i] = vec
                if self.cache is not None:
                    self.cache.put(keys[i], {"kind": "embedding", "model": model, "vector": vec})
        return [v if v is not None else [] for v in out]


def _detail(exc: urllib.error.HTTPError) -> str:
    """The server's error message from an error response (at most 300 characters)."""
    try:
        raw = exc.read(_ERROR_BODY_BYTES)
    except Exception:  # noqa: BLE001 - a body we cannot read
        raw = b""
    finally:
        with contextlib.suppress(Exception):
            exc.close()
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return (text or str(exc.reason or ""))[:300]
    err = body.get("error", body) if isinstance(body, dict) else body
    msg = err.get("message", err) if isinstance(err, dict) else err
    return (msg if isinstance(msg, str) else json.dumps(msg, ensure_ascii=False))[:300]


def _usage(resp: dict) -> dict | None:
    u = resp.get("usage")
    if not isinstance(u, dict):
        return None
    try:
        return {
            k: int(u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
    except (TypeError, ValueError):
        return None


def _header(headers: Any, name: str) -> str | None:
    """A header's value, whatever the case of its name (HTTPMessage, httpx or a plain dict)."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value).strip()


def retry_after(headers: Any, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a server asks us to wait: `retry-after-ms`, or `Retry-After` in seconds or as
    an HTTP date (a date in the past means now). None when absent or unreadable.

    The only Retry-After parser of kgc's clients (`ChatClient`, hence `OpenAIEngine` too)."""
    if headers is None:
        return None
    ms = _header(headers, "retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now())


__all__ = [
    "BadResponse",
    "ChatClient",
    "ChatParams",
    "Completion",
    "Pacer",
    "ResponseCache",
    "ResponseTooLarge",
    "estimate_tokens",
    "request_key",
    "retry_after",
]
