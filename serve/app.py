"""Ray Serve application: the IE task API and an OpenAI-compatible API over kgc extractors.

    serve run serve/config.yaml            # or: kgc serve --config serve/config.yaml
    python -c "from serve.app import build_app"

Endpoints: POST /v1/extract, POST /v1/chat/completions, GET /v1/models, GET /healthz,
OpenAPI docs at /docs. One `ModelDeployment` holds the base model and its LoRA adapters
(chosen per request by model name `base:adapter`, loaded lazily, LRU-bounded) and batches
concurrent requests with `@serve.batch`; the `Ingress` deployment is the FastAPI ingress
(auth, limits, schema splitting, parsing).

Each deployment is a plain class plus its Serve wiring: `ModelServer` (an engine, given or
built from the settings) and `IngressServer` + `create_api` (the routes over any object whose
`.generate.remote(...)` is awaitable) run without Ray, so tests drive them with a fake engine.
"""

import asyncio
import contextlib
import inspect
import json
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.config import BackpressureConfig

from kgc.engine import StopCutter, cut_at_stop
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
    check_engine,
    check_json_schema,
    check_strings,
    json_depth,
    key_hash,
    key_matches,
    known_models,
    merge_outputs,
    request_schema,
    request_texts,
    resolve_adapter,
    response_schema,
    split_model_name,
    validation_fields,
)


def _failure(exc: BaseException) -> dict:
    """One item's failure as its own result (the rest of its batch is unaffected)."""
    status = 422 if isinstance(exc, KgcError) else 500
    return {"error": str(exc) or type(exc).__name__, "status": status}


def engine_from_settings(s: ServeSettings) -> Any:
    """The engine a model replica serves with, from kgc's one engine factory: HF (named LoRA
    adapters, LRU-bounded) or vLLM. Defined above the deployment classes that use it (a Serve
    requirement: docs/architecture.md, "Serving")."""
    from kgc.modeling.engines import build_engine
    from kgc.serving import engine_config

    vllm_dtype = None if s.dtype else "auto"  # no dtype set: vLLM keeps the model's own
    return build_engine(
        engine_config(s), max_loaded_adapters=s.max_loaded_adapters, vllm_dtype=vllm_dtype
    )


class _Pending:
    """A request waiting for, or in, the engine's running decode (continuous path)."""

    def __init__(self, item: tuple, future, loop, on_text=None):
        self.item, self.future, self.loop, self.on_text = item, future, loop, on_text
        self.cancelled = False
        self.finished = False

    def stream_piece(self, piece: str) -> None:
        if self.on_text is not None:
            self.on_text(piece)

    @property
    def stream_piece_cb(self):
        return self.stream_piece if self.on_text is not None else None

    def finish(self, result: dict) -> None:
        """Its result, handed to its event loop (from the engine thread)."""
        if self.finished:
            return
        self.finished = True

        def settle() -> None:
            if not self.future.done():
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class ModelServer:
    """The model, without Ray: one engine (built from the settings, or given: tests pass a
    fake), named LoRA adapters, per-item isolation. `ModelDeployment` adds Serve's batching.

    Isolation: `generate` checks and compiles a request's answer schema on its own (in a
    worker thread, with a time limit) before the request joins a batch; inside a batch, a
    group whose engine call fails is retried item by item, so one bad item fails alone. A
    result is {"text": ...} or {"error": ..., "status": ...}, never an exception that would
    fail the whole batch.

    Engine calls run on the replica's one engine thread, so the event loop keeps taking
    requests (and compiling their schemas) while the model decodes, and calls stay one at a
    time (the HF engine is not thread-safe) even if a batch awaiting one is cancelled."""

    def __init__(self, settings: dict, engine: Any = None):
        self.s = ServeSettings.model_validate(settings)
        check_engine(self.s)
        self.engine = engine if engine is not None else engine_from_settings(self.s)
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgc-engine")
        # the HF engine's continuous path: requests join the running batch as they arrive
        # (no batching windows); other engines: Serve's @serve.batch windows
        self.continuous = bool(getattr(self.engine, "serves_continuously", False))
        self._lock = threading.Lock()
        self._waiting: deque[_Pending] = deque()
        self._draining = False

    def _run(self, adapter: str | None, items: list[tuple], on_text=None) -> list[dict]:
        """One engine call (on the engine thread): each item's result with its usage."""
        from kgc.engine import GenerationSettings

        path = resolve_adapter(adapter, self.s) if adapter else None
        schemas = [it[3] for it in items]
        use = getattr(self.engine, "use_adapter", None)  # vLLM: no named adapters
        extra = {"on_text": on_text} if on_text is not None else {}
        with use(adapter, path) if use else contextlib.nullcontext():
            texts = self.engine.generate(
                [it[1] for it in items],
                GenerationSettings(max_new_tokens=items[0][2]),
                schemas if any(schemas) else None,
                **extra,
            )
            # the token ids each answer generated, where the engine records them
            counts = getattr(self.engine, "last_token_counts", None)
        if not isinstance(counts, list) or len(counts) != len(texts):
            counts = [None] * len(texts)
        return [self._result(it, t, n) for it, t, n in zip(items, texts, counts)]

    async def _engine_call(self, adapter: str | None, items: list[tuple]) -> list[dict]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._engine_thread, self._run, adapter, items)

    async def run_batch(self, items: list[tuple]) -> list[dict]:
        """items: (adapter or None, prompt, max_new_tokens, answer schema or None); grouped
        so each group is one engine call on one adapter."""
        out: list[dict] = [{}] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (adapter, _prompt, max_new, _schema) in enumerate(items):
            groups.setdefault((adapter, max_new), []).append(i)
        for (adapter, _max_new), idx in groups.items():
            try:
                results = await self._engine_call(adapter, [items[i] for i in idx])
                for i, r in zip(idx, results):
                    out[i] = r
            except Exception as exc:
                if len(idx) == 1:
                    out[idx[0]] = _failure(exc)
                    continue
                for i in idx:  # the group failed: each item alone, so only the bad one fails
                    try:
                        out[i] = (await self._engine_call(adapter, [items[i]]))[0]
                    except Exception as one:
                        out[i] = _failure(one)
        return out

    def _result(self, item: tuple, text: str, tokens: int | None = None) -> dict:
        """An answer with its token counts (OpenAI `usage`): the prompt as the model read
        it, and the token ids the answer generated (`tokens`, from the engine; an engine
        that does not say: the answer's text re-tokenized; without a tokenizer: 0)."""
        count = getattr(self.engine, "count_tokens", None)
        prompt_tokens = getattr(self.engine, "prompt_tokens", None)
        if tokens is not None and prompt_tokens is not None:
            p, c = prompt_tokens(item[1]), tokens
        else:
            p, c = count(item[1], text) if count is not None else (0, 0)
            c = c if tokens is None else tokens
        return {"text": text, "prompt_tokens": p, "completion_tokens": c}

    async def generate_batched(self, item: tuple) -> dict:
        """One item's result; here a batch of its own, batched with concurrent items by
        `ModelDeployment`'s `@serve.batch`."""
        return (await self.run_batch([item]))[0]

    async def _schema_problem(self, schema: dict | None, max_new: int) -> dict | None:
        """A request's answer schema compiled on its own, off the event loop (batches keep
        decoding), with a time limit, and its shortest answer measured against the
        request's token budget: None, or the failure as the request's result."""
        compile_schema = getattr(self.engine, "compile_schema", None)
        if schema is None or compile_schema is None:
            return None
        shortest = getattr(self.engine, "min_answer_tokens", None)

        def check() -> int | None:
            compile_schema(schema)
            return shortest(schema) if shortest is not None else None

        try:
            need = await asyncio.wait_for(
                asyncio.to_thread(check), timeout=self.s.limits.grammar_timeout_s
            )
        except TimeoutError:
            return {
                "error": "response schema: its grammar did not compile within "
                f"{self.s.limits.grammar_timeout_s} s (limits.grammar_timeout_s); "
                "send a smaller schema",
                "status": 413,
            }
        except KgcError as exc:
            return {"error": f"response schema: {exc}", "status": 422}
        if need is not None and max_new < need:
            return {
                "error": f"a token budget of {max_new} cannot hold a complete answer of this "
                f"schema: its shortest answer takes {need} tokens; ask for at least {need} "
                "(max_tokens, or max_new_tokens in /v1/extract)",
                "status": 422,
                "minimum": need,
            }
        return None

    async def _prompt_problem(self, prompt: Any, max_new: int) -> dict | None:
        """A prompt measured in tokens before it joins a decode (engines with a tokenizer):
        its tokens + `max_new` beyond the model's context, or its tokens beyond
        `limits.max_prompt_tokens`, is a 413 naming the numbers (an 89k-token prompt grew a
        replica to 19.9 GB; prefill time grows with the square of the length). A prompt of
        more characters than the room could hold at the vocabulary's longest token is
        refused without tokenizing it. None, or the failure as the request's result."""
        count = getattr(self.engine, "prompt_tokens", None)
        context = getattr(self.engine, "context_tokens", None)
        cap = self.s.limits.max_prompt_tokens
        if count is None or (context is None and cap is None):
            return None
        source = getattr(self.engine, "context_source", "") or "its config"
        rooms = []  # (prompt tokens that fit, why)
        if context is not None:
            rooms.append(
                (
                    context - max_new,
                    f"the model's context of {context} tokens ({source}) less max_new_tokens "
                    f"{max_new}",
                )
            )
        if cap is not None:
            rooms.append((cap, f"limits.max_prompt_tokens {cap}"))
        room, why = min(rooms)
        fix = "send a shorter prompt (or a smaller max_tokens / max_new_tokens)"
        if room < 1:
            return {"error": f"no room for a prompt: {why} leaves {room}; {fix}", "status": 413}
        per = getattr(self.engine, "max_token_chars", None)
        chars = _prompt_chars(prompt)
        if isinstance(per, int) and chars is not None and chars > 2 * per * room:
            return {
                "error": f"the prompt has {chars} characters, at least {chars // (2 * per)} "
                f"tokens; at most {room} fit: {why}; {fix}",
                "status": 413,
                "limit": room,
            }
        try:
            n = await asyncio.to_thread(count, prompt)
        except Exception as exc:  # noqa: BLE001 - a prompt the engine cannot read: its own
            return _failure(exc)
        if n > room:
            return {
                "error": f"the prompt has {n} tokens; at most {room} fit: {why}; {fix}",
                "status": 413,
                "prompt_tokens": n,
                "limit": room,
            }
        return None

    async def _problem(self, prompt: Any, max_new: int, schema: dict | None) -> dict | None:
        """What refuses a request before it joins a decode: its prompt's size, its schema."""
        problem = await self._prompt_problem(prompt, max_new)
        if problem is None:
            problem = await self._schema_problem(schema, max_new)
        return problem

    async def generate(
        self, adapter: str | None, prompt: Any, max_new_tokens: int, schema: dict | None = None
    ) -> dict:
        problem = await self._problem(prompt, max_new_tokens, schema)
        if problem is not None:
            return problem
        item = (adapter, prompt, max_new_tokens, schema)
        if self.continuous:
            return await self._submit(item)
        return await self.generate_batched(item)

    # ------------------------------------------------------------- the continuous path
    async def _submit(self, item: tuple, on_text=None) -> dict:
        """Queue a request for the engine's running decode (started if idle); its result
        arrives the moment its answer ends."""
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop.create_future(), loop, on_text)
        with self._lock:
            self._waiting.append(pending)
            start, self._draining = not self._draining, True
        if start:
            loop.run_in_executor(self._engine_thread, self._drain)
        try:
            return await pending.future
        finally:
            pending.cancelled = True  # a client that left: not started if still waiting

    def _take(self, adapter: str | None, free: int) -> list[_Pending]:
        """Up to `free` waiting requests for `adapter`, oldest first, none past the oldest
        request for another adapter (first come, first served across adapters)."""
        out: list[_Pending] = []
        with self._lock:
            while self._waiting and len(out) < free:
                p = self._waiting[0]
                if p.cancelled:
                    self._waiting.popleft()
                    continue
                if p.item[0] != adapter:
                    break
                out.append(self._waiting.popleft())
        return out

    def _gather(self) -> None:
        """Starting from idle: gather requests until a full batch waits, or none arrived
        for `batch_wait_s` (at most 4 × `batch_wait_s` in all), so that requests arriving
        together start together — one prefill and one wave of steps instead of a prefill per
        arrival. Requests arriving while a decode runs join it at its next step, unwaited."""
        gap = self.s.batch_wait_s
        now = time.monotonic()
        last, end, seen = now, now + 4 * gap, -1
        while now < end and now - last < gap:
            with self._lock:
                n = len(self._waiting)
            if n >= self.s.batch_size:
                return
            if n != seen:
                last, seen = now, n
            time.sleep(0.002)
            now = time.monotonic()

    def _drain(self) -> None:
        """The engine thread: decode waiting requests, one adapter at a time, until none is
        left. A failing decode is retried request by request, so only a bad one fails."""
        while True:
            self._gather()
            with self._lock:
                while self._waiting and self._waiting[0].cancelled:
                    self._waiting.popleft()
                if not self._waiting:
                    self._draining = False
                    return
                adapter = self._waiting[0].item[0]
            open_: list[_Pending] = []
            try:
                self._decode(adapter, open_)
            except Exception as exc:  # noqa: BLE001 - isolated below, one request at a time
                if not open_:  # failed before taking any (e.g. the adapter would not load)
                    for p in self._take(adapter, len(self._waiting)):
                        p.finish(_failure(exc))
                    continue
                for p in open_:
                    if p.finished or p.cancelled:
                        continue
                    try:
                        p.finish(self._run(adapter, [p.item])[0])
                    except Exception as one:  # noqa: BLE001
                        p.finish(_failure(one))

    def _decode(self, adapter: str | None, open_: list[_Pending]) -> None:
        from kgc.modeling.hf_engine import ServeRequest

        path = resolve_adapter(adapter, self.s) if adapter else None

        def take(free: int) -> list:
            reqs = []
            for p in self._take(adapter, free):
                open_.append(p)

                def done(text, error, tokens=None, p=p):
                    p.finish(_failure(error) if error else self._result(p.item, text, tokens))

                _a, prompt, max_new, schema = p.item
                reqs.append(
                    ServeRequest(
                        prompt,
                        max_new,
                        schema,
                        done,
                        p.stream_piece_cb,
                        is_cancelled=lambda p=p: p.cancelled,  # polled by the decode, each step
                    )
                )
            return reqs

        with self.engine.use_adapter(adapter, path):
            self.engine.serve(take)

    async def stream(
        self, adapter: str | None, prompt: Any, max_new_tokens: int, schema: dict | None = None
    ):
        """`stream: true`: the answer as it is generated, as {"text": piece} items (token by
        token where the engine streams: the HF engine's continuous path; one piece at the
        end otherwise), or one {"error", "status"} item. A streamed request is its own
        engine call, taking its turn on the engine thread with the batches. A consumer that
        leaves (the generator closed or cancelled) cancels its request: on the continuous
        path its row leaves the running decode at the next step."""
        problem = await self._problem(prompt, max_new_tokens, schema)
        if problem is not None:
            yield problem
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end = object()
        streams = self.continuous or "on_text" in inspect.signature(self.engine.generate).parameters

        def on_text(_i: int, piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        item = (adapter, prompt, max_new_tokens, schema)
        if self.continuous:  # joins the running batch, pieces as its tokens are chosen
            call = asyncio.ensure_future(self._submit(item, lambda piece: on_text(0, piece)))
        else:
            call = loop.run_in_executor(
                self._engine_thread, self._run, adapter, [item], on_text if streams else None
            )
        call.add_done_callback(lambda _f: queue.put_nowait(end))
        try:
            while (piece := await queue.get()) is not end:
                yield {"text": piece}
            result = call.result()
        except Exception as exc:
            yield _failure(exc)
            return
        finally:  # cancelled, or closed by a consumer that left (GeneratorExit)
            if not call.done():
                call.cancel()
        if isinstance(result, list):  # an engine call's results
            result = result[0]
        if "error" in result:
            yield result
        elif not streams and result["text"]:
            yield {"text": result["text"]}


@serve.deployment
class ModelDeployment(ModelServer):
    """The model deployment: a ModelServer whose concurrent requests are batched."""

    def __init__(self, settings: dict, engine: Any = None):
        super().__init__(settings, engine)
        self.generate_batched.set_max_batch_size(self.s.batch_size)
        self.generate_batched.set_batch_wait_timeout_s(self.s.batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def generate_batched(self, items: list[tuple]) -> list[dict]:
        return await self.run_batch(items)


def _chunk(head: dict, delta: dict, finish: str | None = None) -> str:
    """One server-sent event: a chat-completion chunk, or, when `head` is a text
    completion's, a text-completion chunk (`delta`'s content as its text)."""
    if head.get("object") == "text_completion":
        choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None}
        chunk = {**head, "choices": [{**choice, "finish_reason": finish}]}
    else:
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


async def _sse(head: dict, first: str, rest, stop: list[str]):
    """`stream: true`: the answer as OpenAI chat-completion chunks (server-sent events), a
    chunk per piece the model replica sends (token by token on the HF engine), cut at the
    request's stop strings. A failure after the first chunk ends the stream with an error
    event (the status line has been sent)."""
    cutter = StopCutter(stop)
    if head.get("object") != "text_completion":
        yield _chunk(head, {"role": "assistant", "content": ""})
    piece = cutter.push(first)
    if piece:
        yield _chunk(head, {"content": piece})
    try:
        async for item in rest:
            if "error" in item:
                yield f"data: {json.dumps({'error': {'message': item['error']}})}\n\n"
                return
            piece = cutter.push(item["text"])
            if piece:
                yield _chunk(head, {"content": piece})
            if cutter.done:
                break
    except Exception as exc:  # the replica went away mid-answer
        message = "the model replica was lost" if _replica_lost(exc) else str(exc)
        yield f"data: {json.dumps({'error': {'message': message}})}\n\n"
        return
    finally:  # the client left, a stop string, or the end: no orphaned generation
        with contextlib.suppress(Exception):
            if hasattr(rest, "cancel"):
                rest.cancel()
            elif hasattr(rest, "aclose"):
                await rest.aclose()
    piece = cutter.finish()
    if piece:
        yield _chunk(head, {"content": piece})
    yield _chunk(head, {}, "stop")
    yield "data: [DONE]\n\n"


def _prompt_chars(prompt: Any) -> int | None:
    """Characters of a prompt's text (a message's content, a raw prompt's text), None if it
    is not a prompt."""
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, dict):
        raw = prompt.get("raw")
        return len(raw) if isinstance(raw, str) else None
    if isinstance(prompt, list):
        parts = [m.get("content") if isinstance(m, dict) else None for m in prompt]
        return sum(len(c) for c in parts if isinstance(c, str))
    return None


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


def _invalid(exc: ValidationError) -> JSONResponse:
    """A malformed OpenAI request: 422 naming the first bad field, and every bad field."""
    fields = validation_fields(exc)
    first = fields[0]
    return _error(422, f"{first['field']}: {first['message']}", field=first["field"], fields=fields)


def _replica_lost(exc: BaseException) -> bool:
    """The model replica died or became unreachable while holding the request."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))


async def _gather_or_cancel(responses: list, check=None) -> list:
    """Await Serve responses together; if one fails (or `check` raises on its result) or
    this request is cancelled (the client went away), cancel the rest at once so no
    orphaned model calls keep running."""

    async def one(response):
        result = await response
        if check is not None:
            check(result)
        return result

    tasks = [asyncio.ensure_future(one(r)) for r in responses]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t, r in zip(tasks, responses):
            t.cancel()
            with contextlib.suppress(Exception):
                r.cancel()
        raise


def _refused(result: dict) -> None:
    """A model call's refusal (its 4xx) as the request's: the request's other calls are
    cancelled, not decoded for nothing."""
    if "error" in result:
        raise HTTPException(result["status"], result["error"])


async def call_model(model, calls: list[tuple], retry_after_s: int) -> list[dict]:
    """Model calls (adapter, prompt, max_new, schema) on the ModelDeployment handle → their
    results ({"text", "prompt_tokens", "completion_tokens"}); an item's failure → its 4xx;
    a lost replica → 503 with Retry-After (never a 500)."""
    try:
        return await _gather_or_cancel([model.generate.remote(*c) for c in calls], _refused)
    except Exception as exc:
        if _replica_lost(exc):
            raise HTTPException(
                503,
                "the model replica was lost; retry shortly",
                headers={"Retry-After": str(max(retry_after_s, 1))},
            ) from None
        raise


def usage(results: list[dict]) -> dict:
    """OpenAI `usage` over answers."""
    p = sum(r.get("prompt_tokens", 0) for r in results)
    c = sum(r.get("completion_tokens", 0) for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def finish_reason(result: dict, max_new: int) -> str:
    """ "length" when the answer used the whole budget, else "stop"."""
    return "length" if result.get("completion_tokens", 0) >= max_new else "stop"


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
            if _replica_lost(exc):
                return JSONResponse(
                    {"error": {"message": "the model replica was lost; retry shortly"}},
                    status_code=503,
                    headers={"Retry-After": str(max(self.s.retry_after_s, 1))},
                )
            raise
        if "error" in first:
            return _error(first["status"], first["error"])
        return StreamingResponse(
            _sse(head, first["text"], pieces, stop), media_type="text/event-stream"
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
            return _invalid(exc)
        limits = self.s.limits
        if len(body.messages) > limits.max_messages:
            return _error(
                413,
                f"{len(body.messages)} messages; at most {limits.max_messages}",
                field="messages",
            )
        adapter = self._adapter(body.model)
        asked = body.max_tokens or body.max_completion_tokens or self.s.max_new_tokens
        max_new = min(asked, limits.max_new_tokens)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if sum(len(m["content"]) for m in messages) > limits.max_text_chars:
            return _error(
                413, f"messages exceed {limits.max_text_chars} characters", field="messages"
            )
        prompt: Any = messages if len(messages) > 1 else messages[0]["content"]
        try:
            schema = response_schema({"response_format": body.response_format})
            if schema is not None:
                check_json_schema("response_format.json_schema.schema", schema, limits)
        except RequestTooLarge as exc:
            return _error(413, str(exc), field="response_format")
        except KgcError as exc:
            return _error(422, str(exc), field="response_format")
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
            return _invalid(exc)
        limits = self.s.limits
        prompts = body.prompts()
        if len(prompts) > limits.max_texts:
            return _error(
                413, f"{len(prompts)} prompts; at most {limits.max_texts}", field="prompt"
            )
        for i, p in enumerate(prompts):
            if len(p) > limits.max_text_chars:
                where = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
                return _error(
                    413, f"{where} has {len(p)} characters; at most {limits.max_text_chars}",
                    field=where,
                )  # fmt: skip
            if not p:
                where = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
                return _error(422, f"{where} is empty", field=where)
        if body.stream and len(prompts) > 1:
            return _error(422, "stream: true takes one prompt, not a list", field="stream")
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
    # keys set where `serve run` (or build_app) runs reach the replicas as sha256 hashes
    # (replicas do not inherit this environment; Ray's dashboard shows deployment arguments)
    hashes = sorted(set(s.api_key_sha256) | {key_hash(k) for k in api_keys(s.api_keys_env)})
    settings["api_key_sha256"] = hashes
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
    model = ModelDeployment.options(**gen_opts).bind(settings)
    return Ingress.options(**api_opts).bind(model, settings)
