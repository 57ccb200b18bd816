"""Engine over any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM's server, our
Ray Serve app): a thin adapter over the shared client `kgc.icl.client.ChatClient`, which
owns the HTTP call (standard library only: usable from Ray Data actors without extra
packages), the retries with backoff on 429/408/409/5xx, timeouts and connection errors, and
the `Retry-After` parsing (seconds, HTTP date, `retry-after-ms`).

This module turns prompts into chat requests (a JSON Schema per prompt goes out as
`response_format`), runs them `concurrency` at a time in the prompts' order, and turns the
answers into texts; a request that still fails raises `EngineRequestError`. The API key comes
from an environment variable, never from a config file. No response cache: extraction has its
own resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kgc.engine import GenerationSettings, Prompt, as_messages, cut_at_stop
from kgc.errors import KgcError
from kgc.icl.client import ChatClient, ChatParams
from kgc.icl.config import ClientConfig


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
        self.system = system
        cfg = ClientConfig(
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            allow_no_key=True,  # a local server without auth; no Authorization header then
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=1.0,
            max_backoff_s=60.0,  # also the cap on a server's Retry-After
            concurrency=max(1, concurrency),
            cache_dir=None,
        )
        self.client = ChatClient(cfg, section="engine")

    # the client's settings, adjustable after construction (as the attributes always were)
    @property
    def concurrency(self) -> int:
        return self.client.cfg.concurrency

    @concurrency.setter
    def concurrency(self, n: int) -> None:
        self.client.cfg.concurrency = max(1, int(n))

    @property
    def timeout_s(self) -> float:
        return self.client.cfg.timeout_s

    @timeout_s.setter
    def timeout_s(self, seconds: float) -> None:
        self.client.cfg.timeout_s = float(seconds)

    @property
    def max_retries(self) -> int:
        return self.client.cfg.max_retries

    @max_retries.setter
    def max_retries(self, n: int) -> None:
        self.client.cfg.max_retries = max(0, int(n))

    def _params(self, cfg: GenerationSettings) -> ChatParams:
        return ChatParams(
            max_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature if cfg.do_sample else 0.0,
            top_p=cfg.top_p if cfg.do_sample else 1.0,
            stop=tuple(cfg.stop)[:4],  # the API accepts at most four
            seed=cfg.seed,
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationSettings,
        schemas: Sequence[dict | None] | None = None,
    ) -> list[str]:
        base = self._params(config)
        params = [base] * len(prompts)
        for i, schema in enumerate(list(schemas or ())[: len(prompts)]):
            if schema:  # structured output (OpenAI, vLLM's server, the kgc Serve app)
                params[i] = replace(
                    base,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema, "strict": True},
                    },
                )
        messages = [as_messages(p, self.system) for p in prompts]
        try:
            comps = self.client.chat_many(messages, params)
        except KgcError as exc:  # 401/403/404: every request would fail the same way
            raise EngineRequestError(str(exc)) from None
        for c in comps:
            if c.error is not None:
                raise EngineRequestError(c.error)
        return [cut_at_stop(c.text, config.stop) for c in comps]
