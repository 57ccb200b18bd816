"""The model deployment: `ModelServer`, the model replica without Ray (an engine, given or
built from the settings; named LoRA adapters; the continuous path or batches; per-item
isolation; prompt and schema checks before a decode), and `ModelDeployment`, its Serve
wiring (`@serve.batch`). Module functions the class calls are defined above it:
`@serve.deployment` pickles the class where it is defined.
"""

import asyncio
import contextlib
import inspect
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from kgc.engine import prompt_chars, prompt_room
from kgc.errors import KgcError
from kgc.serving import ServeSettings, check_engine, resolve_adapter


def _failure(exc: BaseException) -> dict:
    """One item's failure as its own result (the rest of its batch is unaffected)."""
    status = 422 if isinstance(exc, KgcError) else 500
    return {"error": str(exc) or type(exc).__name__, "status": status}


def engine_from_settings(s: ServeSettings) -> Any:
    """The engine a model replica serves with, from kgc's one engine factory: HF (named LoRA
    adapters, LRU-bounded) or vLLM's async engine (named LoRA adapters through vLLM's
    multi-LoRA, its slots sized for the largest rank among the adapters known at start).
    Defined above the deployment classes that use it (a Serve requirement:
    docs/architecture.md, "Serving")."""
    from kgc.modeling.engines import build_engine
    from kgc.serving import engine_config, known_models

    rank = None
    if s.engine == "vllm" and (s.adapters or s.adapter_dir):
        from kgc.modeling.vllm_engine import largest_lora_rank

        names = [m.split(":", 1)[1] for m in known_models(s)[1:]]
        rank = largest_lora_rank(p for n in names if (p := resolve_adapter(n, s)))
    vllm_dtype = None if s.dtype else "auto"  # no dtype set: vLLM keeps the model's own
    return build_engine(
        engine_config(s),
        max_loaded_adapters=s.max_loaded_adapters,
        vllm_dtype=vllm_dtype,
        serving=True,
        named_lora_rank=rank,
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
        # vLLM's async engine: each request is its own generate stream, batched by vLLM's
        # scheduler (neither the engine thread nor @serve.batch)
        self.asynchronous = bool(getattr(self.engine, "serves_async", False))
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

    async def _generate_async(self, item: tuple, on_text=None) -> dict:
        """One request on an async engine (vLLM's): its result with its usage, or its
        failure. Cancelling the caller aborts the request in the engine."""
        from kgc.engine import GenerationSettings

        adapter, prompt, max_new, schema = item
        named = (adapter, resolve_adapter(adapter, self.s)) if adapter else None
        try:
            text, p, c = await self.engine.generate_async(
                prompt, GenerationSettings(max_new_tokens=max_new), schema, named, on_text
            )
        except Exception as exc:  # noqa: BLE001 - the request's own failure, as its result
            return _failure(exc)
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
        """A prompt measured in tokens before it joins a decode (engines with a tokenizer;
        `kgc.engine.prompt_room`, the check batch extraction makes too): its tokens +
        `max_new` beyond the model's context, or its tokens beyond
        `limits.max_prompt_tokens`, is a 413 naming the numbers (an 89k-token prompt grew a
        replica to 19.9 GB; prefill time grows with the square of the length). A prompt of
        more characters than the room could hold at the vocabulary's longest token is
        refused without tokenizing it. None, or the failure as the request's result."""
        cap = self.s.limits.max_prompt_tokens
        room = prompt_room(self.engine, max_new, cap)
        if room is None:
            return None
        if room.capped:
            why = f"limits.max_prompt_tokens {cap}"
        else:
            why = (
                f"the model's context of {room.context} tokens ({room.source or 'its config'}) "
                f"less max_new_tokens {max_new}"
            )
        fix = "send a shorter prompt (or a smaller max_tokens / max_new_tokens)"
        if room.tokens < 1:
            return {
                "error": f"no room for a prompt: {why} leaves {room.tokens}; {fix}",
                "status": 413,
            }
        least = room.at_least(prompt)
        if least is not None:
            return {
                "error": f"the prompt has {prompt_chars(prompt)} characters, at least {least} "
                f"tokens; at most {room.tokens} fit: {why}; {fix}",
                "status": 413,
                "limit": room.tokens,
            }
        try:
            n = await asyncio.to_thread(room.count, prompt)
        except Exception as exc:  # noqa: BLE001 - a prompt the engine cannot read: its own
            return _failure(exc)
        if n > room.tokens:
            return {
                "error": f"the prompt has {n} tokens; at most {room.tokens} fit: {why}; {fix}",
                "status": 413,
                "prompt_tokens": n,
                "limit": room.tokens,
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
        if self.asynchronous:
            return await self._generate_async(item)
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
        streams = (
            self.asynchronous
            or self.continuous
            or "on_text" in inspect.signature(self.engine.generate).parameters
        )

        def on_text(_i: int, piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        item = (adapter, prompt, max_new_tokens, schema)
        if self.asynchronous:  # vLLM's own stream: pieces as vLLM detokenizes them
            call = asyncio.ensure_future(
                self._generate_async(item, lambda piece: on_text(0, piece))
            )
        elif self.continuous:  # joins the running batch, pieces as its tokens are chosen
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
