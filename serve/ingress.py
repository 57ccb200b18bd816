"""The ingress deployment: `IngressServer`, the HTTP side without Ray (auth, body limits,
validation naming fields, schema splitting, parsing), `create_api`, its FastAPI routes, and
`Ingress`, its Serve wiring. Request models and checks live in `kgc.serving`; answers' wire
shapes in `serve.responses`; calls to the model deployment in `serve.calls`.
"""

import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve

from kgc.engine import cut_at_stop
from kgc.errors import KgcError
from kgc.serving import (
    BadRequest,
    ChatRequest,
    CompletionRequest,
    ExtractRequest,
    RequestTooLarge,
    ServeSettings,
    adapter_unavailable,
    api_keys,
    build_instructions,
    check_json_schema,
    check_strings,
    json_depth,
    key_hash,
    key_matches,
    known_models,
    merge_outputs,
    request_schema,
    request_texts,
    response_schema,
    split_model_name,
    validation_fields,
)
from serve.calls import call_model, replica_lost
from serve.responses import error_response, finish_reason, invalid_response, sse, usage


class IngressServer:
    """The HTTP side, without Ray: auth, limits, validation, schema splitting, parsing.
    `model` is a handle to the model deployment, or anything whose `.generate.remote(...)`
    gives an awaitable with `.cancel()` (tests: a ModelServer with a fake engine)."""

    def __init__(self, model, settings: dict):
        self.model = model
        self.s = ServeSettings.model_validate(settings)
        # only hashes are held (and shown in Ray's dashboard); keys set in this replica's
        # own environment count too
        self.key_hashes = set(self.s.api_key_sha256) | {
            key_hash(k) for k in api_keys(self.s.api_keys_env)
        }
        if not self.s.auth_disabled and not self.key_hashes:
            raise KgcError(
                f"no API keys: set {self.s.api_keys_env}=key1,key2 in the environment, or "
                "auth_disabled: true for local use only"
            )

    def _check(self, request: Request) -> None:
        """Auth and declared body size, before the body is read or validated."""
        if not self.s.auth_disabled:
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not key_matches(token, self.key_hashes):
                raise HTTPException(401, "missing or wrong API key (Authorization: Bearer …)")
        declared = request.headers.get("content-length")
        limit = self.s.limits.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length {declared[:20]!r} is not a number")
            if int(declared) > limit:
                raise HTTPException(
                    413,
                    f"request body has {declared} bytes; at most {limit} (limits.max_body_bytes)",
                )

    async def _json(self, request: Request) -> Any:
        """The body parsed as JSON: auth first; the byte limit is enforced on the bytes read
        (chunked bodies too), and the nesting depth and text are checked."""
        self._check(request)
        limit = self.s.limits.max_body_bytes
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(
                    413, f"request body exceeds {limit} bytes (limits.max_body_bytes)"
                )
        try:
            value = json.loads(body)
        except RecursionError:
            value = None
            depth = self.s.limits.max_json_depth + 1
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(422, f"the body is not valid JSON: {exc}") from None
        else:
            depth = json_depth(value, self.s.limits.max_json_depth)
        if depth > self.s.limits.max_json_depth:
            raise HTTPException(
                422, f"the body is nested deeper than {self.s.limits.max_json_depth} levels"
            )
        try:
            check_strings("body", value)
        except BadRequest as exc:
            raise HTTPException(422, {"message": str(exc), "field": exc.field}) from None
        return value

    def _adapter(self, model: str | None) -> str | None:
        try:
            return split_model_name(model, self.s)
        except KeyError as exc:
            why = adapter_unavailable(str(exc.args[0]), self.s)
            message = f"model {model!r}: {why}" if why else f"unknown model {model!r}"
            raise HTTPException(404, {"message": message, "models": known_models(self.s)}) from None

    async def _generate(self, calls: list[tuple]) -> list[dict]:
        return await call_model(self.model, calls, self.s.retry_after_s)

    async def _stream(self, head: dict, call: tuple, stop: list[str]) -> Any:
        """A streamed answer: the first piece is awaited here, so a request that fails
        before any text gets its 4xx (or 503) as a plain response; then server-sent events."""
        pieces = self.model.options(stream=True).stream.remote(*call)
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = {"text": ""}
        except Exception as exc:
            if replica_lost(exc):
                return JSONResponse(
                    {"error": {"message": "the model replica was lost; retry shortly"}},
                    status_code=503,
                    headers={"Retry-After": str(max(self.s.retry_after_s, 1))},
                )
            raise
        if "error" in first:
            return error_response(first["status"], first["error"])
        return StreamingResponse(
            sse(head, first["text"], pieces, stop), media_type="text/event-stream"
        )

    async def healthz(self) -> dict:
        return {"status": "ok"}

    async def models(self, request: Request) -> dict:
        self._check(request)
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "kgc"} for m in known_models(self.s)],
        }

    async def extract(self, request: Request) -> dict:
        raw = await self._json(request)
        try:
            body = ExtractRequest.model_validate(raw)
        except ValidationError as exc:
            fields = validation_fields(exc)
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
        n_calls = sum(len(per) for per in prompts)
        if n_calls > self.s.limits.max_model_calls:
            raise HTTPException(
                413,
                f"this request needs {n_calls} model calls ({len(texts)} texts × their schema "
                f"splits); at most {self.s.limits.max_model_calls} (limits.max_model_calls): "
                "send fewer texts per request or a larger split_num",
            )
        answers = await self._generate(
            [(adapter, p, max_new, a) for per in prompts for p, a in per]
        )
        outputs = iter(a["text"] for a in answers)
        results = []
        for text, per in zip(texts, prompts):
            mine = [next(outputs) for _ in per]
            results.append({"text": text, **merge_outputs(body.task, mine)})
        return {
            "task": body.task,
            "model": body.model or self.s.name,
            "results": results,
            "usage": usage(answers),
        }

    async def chat(self, request: Request) -> Any:
        raw = await self._json(request)
        try:
            body = ChatRequest.model_validate(raw)
        except ValidationError as exc:
            return invalid_response(exc)
        limits = self.s.limits
        if len(body.messages) > limits.max_messages:
            return error_response(
                413,
                f"{len(body.messages)} messages; at most {limits.max_messages}",
                field="messages",
            )
        adapter = self._adapter(body.model)
        asked = body.max_tokens or body.max_completion_tokens or self.s.max_new_tokens
        max_new = min(asked, limits.max_new_tokens)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if sum(len(m["content"]) for m in messages) > limits.max_text_chars:
            return error_response(
                413, f"messages exceed {limits.max_text_chars} characters", field="messages"
            )
        prompt: Any = messages if len(messages) > 1 else messages[0]["content"]
        try:
            schema = response_schema({"response_format": body.response_format})
            if schema is not None:
                check_json_schema("response_format.json_schema.schema", schema, limits)
        except RequestTooLarge as exc:
            return error_response(413, str(exc), field="response_format")
        except KgcError as exc:
            return error_response(422, str(exc), field="response_format")
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": body.model or self.s.name,
        }
        if body.stream:
            return await self._stream(head, (adapter, prompt, max_new, schema), body.stops())
        answer = (await self._generate([(adapter, prompt, max_new, schema)]))[0]
        text = cut_at_stop(answer["text"], body.stops())
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason(answer, max_new),
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": usage([answer]),
        }

    async def completions(self, request: Request) -> Any:
        """OpenAI /v1/completions: raw text prompts, continued as they are (no chat
        template), one choice per prompt, as vLLM's server does (OneKE's documented way)."""
        raw = await self._json(request)
        try:
            body = CompletionRequest.model_validate(raw)
        except ValidationError as exc:
            return invalid_response(exc)
        limits = self.s.limits
        prompts = body.prompts()
        if len(prompts) > limits.max_texts:
            return error_response(
                413, f"{len(prompts)} prompts; at most {limits.max_texts}", field="prompt"
            )
        for i, p in enumerate(prompts):
            if len(p) > limits.max_text_chars:
                where = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
                return error_response(
                    413, f"{where} has {len(p)} characters; at most {limits.max_text_chars}",
                    field=where,
                )  # fmt: skip
            if not p:
                where = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
                return error_response(422, f"{where} is empty", field=where)
        if body.stream and len(prompts) > 1:
            return error_response(422, "stream: true takes one prompt, not a list", field="stream")
        adapter = self._adapter(body.model)
        max_new = min(body.max_tokens or self.s.max_new_tokens, limits.max_new_tokens)
        head = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model or self.s.name,
        }
        calls = [(adapter, {"raw": p}, max_new, None) for p in prompts]
        if body.stream:
            return await self._stream(head, calls[0], body.stops())
        answers = await self._generate(calls)
        return {
            **head,
            "choices": [
                {
                    "index": i,
                    "text": cut_at_stop(a["text"], body.stops()),
                    "logprobs": None,
                    "finish_reason": finish_reason(a, max_new),
                }
                for i, a in enumerate(answers)
            ],
            "usage": usage(answers),
        }


# the body /v1/extract reads itself (to name bad fields), described for the OpenAPI docs
EXTRACT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ExtractRequest.model_json_schema(by_alias=True)}
        },
    }
}


def create_api(server: IngressServer) -> FastAPI:
    """The FastAPI app over one IngressServer: Serve builds it on each ingress replica, tests
    around a fake model."""
    api = FastAPI(title="kgc extractors", version="0.1.0")
    api.get("/healthz")(server.healthz)
    api.get("/v1/models")(server.models)
    api.post("/v1/extract", openapi_extra=EXTRACT_BODY)(server.extract)
    api.post("/v1/chat/completions")(server.chat)
    api.post("/v1/completions")(server.completions)
    return api


@serve.deployment
@serve.ingress()
class Ingress(IngressServer):
    """The ingress deployment: Serve calls `__serve_build_asgi_app__` once the replica's
    IngressServer exists, and serves the app it returns."""

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)
