"""Ray Serve application: the IE task API and an OpenAI-compatible API over kgc extractors.

    serve run serve/config.yaml            # or: kgc serve --config serve/config.yaml
    python -c "from serve.app import build_app"

Endpoints: POST /v1/extract, POST /v1/chat/completions, GET /v1/models, GET /healthz,
OpenAPI docs at /docs. One `Generator` deployment holds the base model and its LoRA
adapters (chosen per request by model name `base:adapter`, loaded lazily, LRU-bounded) and
batches concurrent requests with `@serve.batch`; the `Api` deployment is the FastAPI ingress
(auth, limits, schema splitting, parsing).
"""

import asyncio
import contextlib
import json
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.config import BackpressureConfig

from kgc.engine import cut_at_stop
from kgc.errors import KgcError
from kgc.serving import (
    ExtractRequest,
    RequestTooLarge,
    ServeSettings,
    api_keys,
    build_instructions,
    chat_prompt,
    check_engine,
    known_models,
    merge_outputs,
    request_schema,
    request_texts,
    resolve_adapter,
    response_schema,
    split_model_name,
)

app = FastAPI(title="kgc extractors", version="0.1.0")


@serve.deployment
class Generator:
    """The model: one HF engine, named LoRA adapters, dynamic request batching."""

    def __init__(self, settings: dict):
        from kgc.config import ModelConfig

        self.s = ServeSettings.model_validate(settings)
        check_engine(self.s)
        model = ModelConfig(path=self.s.model) if self.s.model else None
        if self.s.engine == "vllm":
            from kgc.modeling.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model, adapter=self.s.adapter, checkpoint=self.s.checkpoint)
        else:
            from kgc.modeling.hf_engine import HFEngine

            self.engine = HFEngine(
                model,
                adapter=self.s.adapter,
                checkpoint=self.s.checkpoint,
                batch_size=self.s.batch_size,
            )
            self.engine.max_loaded = self.s.max_loaded_adapters
        self.generate_batched.set_max_batch_size(self.s.batch_size)
        self.generate_batched.set_batch_wait_timeout_s(self.s.batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def generate_batched(self, items: list[tuple]) -> list[str]:
        """items: (adapter or None, prompt, max_new_tokens, answer schema or None); grouped
        so each group is one engine call on one adapter."""
        from kgc.engine import GenerationConfig

        out: list[str] = [""] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (adapter, _prompt, max_new, _schema) in enumerate(items):
            groups.setdefault((adapter, max_new), []).append(i)
        for (adapter, max_new), idx in groups.items():
            path = resolve_adapter(adapter, self.s) if adapter else None
            schemas = [items[i][3] for i in idx]
            use = getattr(self.engine, "use_adapter", None)  # vLLM: no named adapters
            with use(adapter, path) if use else contextlib.nullcontext():
                texts = self.engine.generate(
                    [items[i][1] for i in idx],
                    GenerationConfig(max_new_tokens=max_new),
                    schemas if any(schemas) else None,
                )
            for i, t in zip(idx, texts):
                out[i] = t
        return out

    async def generate(
        self, adapter: str | None, prompt: Any, max_new_tokens: int, schema: dict | None = None
    ) -> str:
        return await self.generate_batched((adapter, prompt, max_new_tokens, schema))


async def _sse(head: dict, text: str):
    """`stream: true`: the answer as OpenAI chat-completion chunks (server-sent events).
    The text is generated whole first (batched with other requests), then sent as one
    content chunk; token-by-token streaming is not implemented."""
    deltas = ({"role": "assistant", "content": ""}, {"content": text}, {})
    for i, delta in enumerate(deltas):
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if i == 2 else None}],
        }
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


@serve.deployment
@serve.ingress(app)
class Api:
    def __init__(self, generator, settings: dict):
        self.gen = generator
        self.s = ServeSettings.model_validate(settings)
        self.keys = api_keys(self.s.api_keys_env)
        if not self.s.auth_disabled and not self.keys:
            raise KgcError(
                f"no API keys: set {self.s.api_keys_env}=key1,key2 in the environment, or "
                "auth_disabled: true for local use only"
            )

    def _check(self, request: Request) -> None:
        """Auth and body size, before the body is read or validated."""
        if not self.s.auth_disabled:
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if token not in self.keys:
                raise HTTPException(401, "missing or wrong API key (Authorization: Bearer …)")
        size = int(request.headers.get("content-length") or 0)
        if size > self.s.limits.max_body_bytes:
            raise HTTPException(
                413, f"request body has {size} bytes; at most {self.s.limits.max_body_bytes}"
            )

    async def _json(self, request: Request) -> Any:
        self._check(request)
        try:
            return await request.json()
        except ValueError:
            raise HTTPException(422, "the body is not valid JSON") from None

    def _adapter(self, model: str | None) -> str | None:
        try:
            return split_model_name(model, self.s)
        except KeyError:
            raise HTTPException(
                404, {"message": f"unknown model {model!r}", "models": known_models(self.s)}
            ) from None

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._check(request)
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "kgc"} for m in known_models(self.s)],
        }

    @app.post(
        "/v1/extract",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": ExtractRequest.model_json_schema(by_alias=True)}
                },
            }
        },
    )
    async def extract(self, request: Request) -> dict:
        raw = await self._json(request)
        try:
            body = ExtractRequest.model_validate(raw)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(x) for x in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            raise HTTPException(422, {"message": "invalid request", "fields": fields}) from None
        adapter = self._adapter(body.model)
        try:
            texts = request_texts(body, self.s.limits)
            schema = request_schema(body)
        except RequestTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except KgcError as exc:
            raise HTTPException(422, str(exc)) from None
        max_new = min(body.max_new_tokens or self.s.max_new_tokens, self.s.limits.max_new_tokens)
        # every schema split of every text at once, so the model deployment batches them
        prompts = [build_instructions(body, text, schema, self.s) for text in texts]
        calls = [
            self.gen.generate.remote(adapter, p, max_new, a) for per in prompts for p, a in per
        ]
        outputs = iter(await asyncio.gather(*calls))
        results = []
        for text, per in zip(texts, prompts):
            mine = [next(outputs) for _ in per]
            results.append({"text": text, **merge_outputs(body.task, mine)})
        return {"task": body.task, "model": body.model or self.s.name, "results": results}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(
                422, "field 'messages' (a list of {role, content}) is required", field="messages"
            )
        adapter = self._adapter(body.get("model"))
        max_new = int(body.get("max_tokens") or self.s.max_new_tokens)
        max_new = min(max_new, self.s.limits.max_new_tokens)
        messages = chat_prompt(body["messages"])
        if sum(len(m["content"]) for m in messages) > self.s.limits.max_text_chars:
            return _error(413, f"messages exceed {self.s.limits.max_text_chars} characters")
        prompt: Any = messages if len(messages) > 1 else messages[0]["content"]
        try:
            schema = response_schema(body)
        except KgcError as exc:
            return _error(422, str(exc), field="response_format")
        text = await self.gen.generate.remote(adapter, prompt, max_new, schema)
        stops = body.get("stop") or []
        text = cut_at_stop(text, [stops] if isinstance(stops, str) else stops)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": body.get("model") or self.s.name,
        }
        if body.get("stream"):
            return StreamingResponse(_sse(head, text), media_type="text/event-stream")
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def resolved_settings(args: dict) -> dict:
    """The settings, validated, with `model` as a local HF folder: a .gguf file or a prepared
    model's name is prepared once here, before any replica starts."""
    settings = ServeSettings.model_validate(args).model_dump(mode="json")
    if settings.get("model") and settings.get("engine", "hf") in ("hf", "vllm"):
        from kgc.modeling.prepare import resolve_model_path

        settings["model"] = resolve_model_path(settings["model"])
    return settings


def build_app(args: dict) -> Any:
    """`serve run serve/config.yaml` entry: args are ServeSettings fields."""
    settings = resolved_settings(args)
    s = ServeSettings.model_validate(settings)
    check_engine(s)  # before any replica starts
    actor: dict[str, Any] = {"num_cpus": s.replica_cpus}
    model_actor = dict(actor, num_gpus=s.replica_gpus) if s.replica_gpus else actor
    if os.environ.get(s.api_keys_env):
        # keys set where `serve run` (or build_app) runs reach the replicas, which do not
        # inherit this process's environment
        actor["runtime_env"] = {"env_vars": {s.api_keys_env: os.environ[s.api_keys_env]}}
    # Overload: a request beyond a deployment's running + queued limits is rejected by Serve
    # with 429 and Retry-After (never a crash or a 5xx). The ingress only awaits the model,
    # so it admits as many requests as the model can hold; the model's queue is the limit.
    busy = BackpressureConfig(status_code=429, retry_after_s=s.retry_after_s)
    room = s.max_ongoing_requests + max(s.max_queued_requests, 0)
    api_opts = dict(
        max_ongoing_requests=room + 16,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=busy,
        ray_actor_options=actor,
    )
    gen_opts: dict[str, Any] = dict(
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=busy,
        ray_actor_options=model_actor,
    )
    if s.autoscaling is not None:
        gen_opts["autoscaling_config"] = s.autoscaling.model_dump()
    else:
        gen_opts["num_replicas"] = s.num_replicas
    return Api.options(**api_opts).bind(Generator.options(**gen_opts).bind(settings), settings)
