"""The client layer: chat completions and embeddings on any OpenAI-compatible endpoint.

- the official `openai` client (imported when the first request is made), built with
  `max_retries=0`: retries are ours, so they are counted and testable;
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
neither logged nor written to the cache.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.errors import KgcError
from kgc.icl.config import ClientConfig

RETRY_STATUS = frozenset({408, 409, 429})
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
    """Chat completions and embeddings with retries, rate limits and a disk cache."""

    def __init__(
        self,
        cfg: ClientConfig,
        *,
        limit_share: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "")
        if not key and not cfg.allow_no_key:
            raise KgcError(
                f"environment variable {cfg.api_key_env} (client.api_key_env) is not set; "
                f"export {cfg.api_key_env}=<your key> (keys never go in config files), or set "
                "client.allow_no_key=true for a local server without authentication"
            )
        self._api_key = key or "no-key"
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
        self._client = None
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    def _openai(self):
        with self._client_lock:
            if self._client is None:
                try:
                    import openai
                except ImportError:
                    raise KgcError(
                        "kgc icl needs the openai package: pip install 'kgc[icl]'"
                    ) from None
                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key,
                    max_retries=0,
                    timeout=self.cfg.timeout_s,
                )
            return self._client

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
        import openai

        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _detail(exc)
            msg = f"HTTP {status} from {self.base_url}: {detail}"
            if status in FATAL_STATUS:
                return _Attempt(False, f"{msg} ({FATAL_STATUS[status]})", fatal=True)
            if status in RETRY_STATUS or status >= 500:
                return _Attempt(True, msg, retry_after(exc.response.headers))
            return _Attempt(False, msg)
        if isinstance(exc, openai.APITimeoutError):
            return _Attempt(True, f"timed out after {self.cfg.timeout_s} s ({self.base_url})")
        if isinstance(exc, openai.APIConnectionError):
            return _Attempt(True, f"cannot reach {self.base_url}: {exc.__cause__ or exc}")
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
                raise KgcError(
                    f"{info.message}. Check {self.cfg.api_key_env}, client.base_url "
                    f"({self.base_url}) and client.model ({self.cfg.model!r})."
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

        def call():
            return self._openai().chat.completions.create(
                model=self.cfg.model, messages=messages, **params.request_fields()
            )

        resp, attempts, error = self._with_retries(call, tokens)
        if error is not None:
            return Completion("", error=error, attempts=attempts)
        try:
            text = resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            self._count("failures")
            return Completion("", error="the response has no choices[0].message", attempts=attempts)
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

            def call(batch=batch):
                return self._openai().embeddings.create(
                    model=model, input=batch, encoding_format="float"
                )

            resp, _attempts, error = self._with_retries(
                call, sum(estimate_tokens(t) for t in batch)
            )
            if error is not None:
                raise KgcError(f"embeddings with client.embedding_model={model!r}: {error}")
            data = sorted(resp.data, key=lambda d: d.index)
            if len(data) != len(idx):
                raise KgcError(
                    f"the embeddings endpoint returned {len(data)} vectors for {len(idx)} texts"
                )
            for i, d in zip(idx, data):
                vec = [float(x) for x in d.embedding]
                out[i] = vec
                if self.cache is not None:
                    self.cache.put(keys[i], {"kind": "embedding", "model": model, "vector": vec})
        return [v if v is not None else [] for v in out]


def _detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg)[:300]
    resp = getattr(exc, "response", None)
    try:
        return resp.text[:300] if resp is not None else str(exc)[:300]
    except Exception:  # noqa: BLE001 - a body we cannot read
        return str(exc)[:300]


def _usage(resp: Any) -> dict | None:
    u = getattr(resp, "usage", None)
    if u is None:
        return None
    try:
        return {
            k: int(getattr(u, k) or 0)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
    except (TypeError, ValueError):
        return None


def retry_after(headers: Any) -> float | None:
    """Seconds a server asks us to wait: `retry-after-ms`, `Retry-After` (seconds or date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = [
    "ChatClient",
    "ChatParams",
    "Completion",
    "Pacer",
    "ResponseCache",
    "estimate_tokens",
    "request_key",
    "retry_after",
]
