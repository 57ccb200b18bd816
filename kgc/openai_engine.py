"""Engine over any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM's server, our
Ray Serve app). Standard library only: usable from Ray Data actors without extra packages.

Requests run concurrently (a thread pool), are retried with exponential backoff on 429 and
5xx, and keep the prompts' order. The API key comes from an environment variable, never from
a config file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from kgc.engine import GenerationConfig, Prompt, as_messages, cut_at_stop
from kgc.errors import KgcError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class EngineRequestError(RuntimeError):
    """A request that still failed after the retries."""


class OpenAIEngine:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        system: str | None = None,
    ):
        if not base_url:
            raise KgcError(
                "engine.base_url is required for engine.type=openai (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.model_id = f"openai:{model}@{base_url}"
        self.api_key = os.environ.get(api_key_env, "")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.system = system

    def _body(self, prompt: Prompt, cfg: GenerationConfig) -> dict:
        body = {
            "model": self.model,
            "messages": as_messages(prompt, self.system),
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature if cfg.do_sample else 0.0,
            "top_p": cfg.top_p if cfg.do_sample else 1.0,
        }
        if cfg.stop:
            body["stop"] = list(cfg.stop)[:4]  # the API accepts at most four
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        return body

    def _post(self, body: dict) -> str:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS or attempt == self.max_retries:
                    detail = exc.read().decode("utf-8", "replace")[:300]
                    raise EngineRequestError(f"HTTP {exc.code} from {self.url}: {detail}") from None
                wait = retry_after_s(exc.headers.get("Retry-After"))
                if wait is not None:  # the server says when; wait that long (capped)
                    time.sleep(min(wait, 60.0))
                    continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.max_retries:
                    raise EngineRequestError(f"{self.url} unreachable: {exc}") from None
            except (KeyError, IndexError, json.JSONDecodeError) as exc:
                raise EngineRequestError(f"unexpected response from {self.url}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise EngineRequestError("unreachable")  # pragma: no cover

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
        schemas: Sequence[dict | None] | None = None,
    ) -> list[str]:
        bodies = [self._body(p, config) for p in prompts]
        for body, schema in zip(bodies, schemas or ()):
            if schema:  # structured output (OpenAI, vLLM's server, the kgc Serve app)
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema, "strict": True},
                }
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            texts = list(pool.map(self._post, bodies))
        return [cut_at_stop(t, config.stop) for t in texts]
