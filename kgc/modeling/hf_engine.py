"""Hugging Face `generate` engine: batched, left-padded, length-sorted; CPU or GPU.

Loads a plain model directory, a base model + peft adapter, or a kgc checkpoint (base model
from its `kgc_config.yaml`, adapter from `model/`, prompt layout from `chat_format.json`, so
prompts are formatted exactly as in training). `trust_remote_code` comes only from the
caller (the operator's flag or config), never from a checkpoint's saved config: a checkpoint
is data someone else may have written, and must not be able to switch on running the code
that sits next to the model. Prompt-learning adapters (P-Tuning, P-Tuning v2) decode
through `prompt_learning_generate` (see kgc.modeling.generation for why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kgc.checkpoint import adapter_problem, resolve_checkpoint, trained_weights
from kgc.config import ModelConfig, QuantConfig
from kgc.engine import (
    GenerationSettings,
    Prompt,
    StopCutter,
    as_messages,
    cut_at_stop,
    raw_text,
)
from kgc.errors import KgcError
from kgc.modeling.continuous import (  # noqa: F401  (shared_prefix_len: tests)
    ContinuousDecoder,
    Spellings,
    cache_keyword,
    shared_prefix_len,
)
from kgc.modeling.export import load_trainable
from kgc.modeling.loading import load_model, load_tokenizer, resolve_chat_format
from kgc.templates import ChatFormat


def resolve_engine_model(
    model: ModelConfig | str | None,
    adapter: str | None,
    checkpoint: str | None,
    chat: ChatFormat | None = None,
    *,
    trust_remote_code: bool | None = None,
    quantization: QuantConfig | None = None,
) -> tuple[ModelConfig, str | None, ChatFormat | None]:
    """What an engine loads: a model (config or path) + adapter, or a kgc checkpoint's base
    model, adapter and chat format (an explicit `chat` wins).

    `trust_remote_code`: the caller's decision; None = the caller's own ModelConfig's value
    (False for a path). A checkpoint's saved config never decides it. `quantization`: load
    the weights in 4/8 bits (bitsandbytes), whatever the model config says."""
    if trust_remote_code is None:
        trust_remote_code = isinstance(model, ModelConfig) and model.trust_remote_code
    if checkpoint:
        model, adapter, ckpt_chat = resolve_checkpoint(
            checkpoint, trust_remote_code=trust_remote_code
        )
        chat = chat or ckpt_chat
    if model is None:
        raise KgcError("engine.model (a model directory) or engine.checkpoint is required")
    cfg = ModelConfig(path=model) if isinstance(model, str) else model
    if cfg.trust_remote_code != trust_remote_code:
        cfg = cfg.model_copy(update={"trust_remote_code": trust_remote_code})
    if quantization is not None:
        cfg = cfg.model_copy(update={"quantization": quantization})
    return cfg, adapter, chat


class PromptEncoder:
    """Prompts → token ids exactly as in training (the kgc chat format, or the tokenizer's
    own chat template for message lists), and the token ids that end an answer. Shared by
    the Hugging Face and vLLM engines."""

    def __init__(self, cfg: ModelConfig, chat: ChatFormat | None = None):
        from kgc.modeling.data import PromptFormatter

        self.tok = load_tokenizer(cfg)
        self.tok.padding_side = "left"  # generation continues from the right end
        self.chat = chat or resolve_chat_format(cfg, self.tok)
        self.fmt = PromptFormatter(self.tok, self.chat)
        eos = {self.tok.eos_token_id}
        for s in self.fmt.stop_strings():
            ids = self.tok(s, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                eos.add(ids[0])
        self.eos_ids = sorted(i for i in eos if i is not None)

    def encode(self, prompt: Prompt) -> list[int]:
        raw = raw_text(prompt)
        if raw is not None:  # as the tokenizer reads plain text (its BOS, if it adds one)
            return self.tok(raw)["input_ids"]
        if isinstance(prompt, str):
            return self.fmt.prompt_ids(prompt)
        msgs = as_messages(prompt)
        if self.chat.template is None:
            from kgc.modeling.data import encode_as_text

            def render(texts: list[str]) -> str:
                turns = [{**m, "content": t} for m, t in zip(msgs, texts)]
                return self.tok.apply_chat_template(
                    turns, tokenize=False, add_generation_prompt=True
                )

            return encode_as_text(self.tok, render, [m["content"] for m in msgs])
        # a single-turn kgc template: system text + the user turns joined
        system = next((m["content"] for m in msgs if m["role"] == "system"), None)
        user = "\n".join(m["content"] for m in msgs if m["role"] == "user")
        return self.fmt.prompt_ids(user, system)


# a tokenizer's model_max_length above this is transformers' "not set" (int(1e30)), not a length
_SANE_MAX_LENGTH = 10_000_000


def model_context(config, tok) -> tuple[int, str] | None:
    """The tokens a model attends to (prompt and answer together) and the setting that says
    so: its config's `max_position_embeddings` (or an older name), or the tokenizer's
    `model_max_length` when it is set and smaller; None when neither says."""
    found = None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            found = (v, key)
            break
    m = getattr(tok, "model_max_length", None)
    if isinstance(m, int) and 0 < m < _SANE_MAX_LENGTH and (found is None or m < found[0]):
        found = (m, "the tokenizer's model_max_length")
    return found


def pad_after_prefix(batch: list[list[int]], shared: int, pad: int):
    """Token ids and attention mask, each row laid out as [shared prefix][pads][own tokens].

    With shared=0 this is plain left padding. Positions come from the mask's running sum
    (transformers' generate), so the pads in the middle shift nothing: each row sees the
    positions it would see alone. Every row ends at the last column, where decoding goes on.
    """
    import torch

    width = shared + max(len(x) - shared for x in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, x in enumerate(batch):
        own = len(x) - shared
        ids[r, :shared] = torch.tensor(x[:shared], dtype=torch.long)
        mask[r, :shared] = 1
        ids[r, width - own :] = torch.tensor(x[shared:], dtype=torch.long)
        mask[r, width - own :] = 1
    return ids, mask


class TextDeltas:
    """Token ids → text pieces for streaming: a piece is sent once the decoded text is
    stable (no half UTF-8 character at its end) and cannot be the start of a stop string
    (`StopCutter`), so a prompt's pieces joined equal its final text."""

    def __init__(self, tok, stops: Sequence[str], emit: Callable[[int, str], None]):
        self.tok, self.emit, self.stops = tok, emit, stops
        self.ids: dict[int, list[int]] = {}
        self.decoded: dict[int, str] = {}
        self.cutters: dict[int, StopCutter] = {}

    def _push(self, i: int, text: str) -> None:
        cutter = self.cutters.setdefault(i, StopCutter(self.stops))
        piece = cutter.push(text[len(self.decoded.get(i, "")) :])
        self.decoded[i] = text
        if piece:
            self.emit(i, piece)

    def push(self, i: int, token: int) -> None:
        ids = self.ids.setdefault(i, [])
        ids.append(token)
        self._push(i, self.tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd"))

    def finish(self, count: int) -> None:
        """The rest of every prompt's text."""
        for i in range(count):
            self.finish_one(i)

    def forget(self, i: int) -> None:
        """Prompt i's state, dropped (its request was cancelled)."""
        for d in (self.ids, self.decoded, self.cutters):
            d.pop(i, None)

    def finish_one(self, i: int) -> None:
        """The rest of prompt i's text (its answer has ended)."""
        self._push(i, self.tok.decode(self.ids.get(i, []), skip_special_tokens=True))
        rest = self.cutters.setdefault(i, StopCutter(self.stops)).finish()
        if rest:
            self.emit(i, rest)


@dataclass
class ServeRequest:
    """A request for `HFEngine.serve`: its prompt, budget and answer schema; `done(text,
    error, tokens)` is called once when it ends (`tokens`: how many token ids were
    generated, None on an error); `on_text(piece)` gets its text as it is generated
    (streaming); `is_cancelled()` (asked every step) True: its client left, the row is
    dropped from the decode and `done` is not called."""

    prompt: Prompt
    max_new_tokens: int
    schema: dict | None
    done: Callable[..., None]
    on_text: Callable[[str], None] | None = None
    is_cancelled: Callable[[], bool] | None = None


class HFEngine:
    def __init__(
        self,
        model: ModelConfig | str | None = None,
        *,
        adapter: str | None = None,
        checkpoint: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        chat: ChatFormat | None = None,
        prefix_cache: bool = True,
        continuous: bool = True,
        trust_remote_code: bool | None = None,
        quantization: QuantConfig | None = None,
    ):
        """`trust_remote_code`: run the model folder's own Python code (the operator's
        decision; None = `model.trust_remote_code` of a ModelConfig, else False). A
        checkpoint's saved config cannot turn it on. `quantization`: 4/8-bit weights
        (bitsandbytes) for a plain model or a LoRA checkpoint's base."""
        import torch

        cfg, adapter, chat = resolve_engine_model(
            model,
            adapter,
            checkpoint,
            chat,
            trust_remote_code=trust_remote_code,
            quantization=quantization,
        )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.prompts = PromptEncoder(cfg, chat)
        self.tok, self.chat, self.fmt = self.prompts.tok, self.prompts.chat, self.prompts.fmt
        self.eos_ids = self.prompts.eos_ids
        self.encode = self.prompts.encode
        weights = trained_weights(checkpoint)
        if weights is not None and cfg.quantization is not None:
            raise KgcError(
                f"engine.quantization: checkpoint {checkpoint} holds fully fine-tuned weights "
                "(method full/freeze), which load only into full-precision layers; remove "
                "engine.quantization, or export the checkpoint (kgc export) and quantize that"
            )
        net = load_model(
            cfg, for_training=False, device_map={"": self.device} if cfg.quantization else None
        )
        if weights is not None:  # full / freeze fine-tuning
            load_trainable(net, weights)
        # what Serve measures a prompt + its budget against (before any prefill)
        context = model_context(net.config, self.tok)
        self.context_tokens, self.context_source = context if context else (None, "")
        self.prompt_learning = False
        if adapter:
            from peft import PeftModel

            net = PeftModel.from_pretrained(net, adapter)
            self.prompt_learning = net.active_peft_config.is_prompt_learning
        if cfg.quantization is None:
            net = net.to(self.device)
        self.model = net.eval()
        self.base = self.model  # for named LoRA adapters loaded later (serving)
        self.peft = None
        self.max_loaded = 4
        self._lru: dict[str, str] = {}
        self.batch_size = batch_size
        # the batch's common prompt prefix (chat header, instruction, schema) is prefilled once
        # and its KV cache shared by every row (greedy answers unchanged: tests)
        self.prefix_cache = prefix_cache
        # continuous batching (kgc.modeling.continuous): a row that ends leaves the batch and
        # the next prompt takes its slot; off: transformers' `generate` on static batches
        self.continuous = continuous
        # a forward's fixed cost in tokens' worth (how wide multi-token steps get)
        self.step_overhead_tokens = 48 if self.device == "cpu" else 512
        # how the model spells forced strings, learned across runs (jump-forward drafts)
        self._spellings = Spellings()
        self.last_stats: dict = {}
        # token ids generated per answer by the last `generate` call (usage counts these,
        # not the answer's text re-tokenized)
        self.last_token_counts: list[int] | None = None
        self._max_token_chars: int | None = None
        self._grammar_cache = None  # compiled output grammars (constrained decoding)
        self._closer_obj = None  # constrained answers close within max_new_tokens
        self.model_id = f"{cfg.path}" + (f"+{adapter}" if adapter else "")

    def use_adapter(self, name: str | None, path: str | None = None):
        """Select a named LoRA adapter (loaded on first use, least recently used unloaded
        beyond `max_loaded`), or the base model for None. Returns a context manager."""
        import contextlib

        if name is None:
            if self.peft is None:
                return contextlib.nullcontext()
            self.model = self.peft
            return self.peft.disable_adapter()
        from peft import PeftConfig, PeftModel

        if self.peft is None or name not in self.peft.peft_config:
            if path is None:
                raise KgcError(f"adapter {name!r} is not loaded and no path was given")
            problem = adapter_problem(path)
            if problem is not None:
                raise KgcError(
                    f"adapter {name!r} ({path}) cannot be loaded: {problem}; save it again "
                    "(peft's save_pretrained) or remove it from the settings"
                )
            if PeftConfig.from_pretrained(path).is_prompt_learning:
                raise KgcError(
                    f"adapter {name!r} is a prompt-learning adapter; serve it as its "
                    "own model (checkpoint), not as a named LoRA adapter"
                )
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name).eval()
            else:
                self.peft.load_adapter(path, adapter_name=name)
        self._lru.pop(name, None)
        self._lru[name] = path or ""
        while len(self._lru) > self.max_loaded:
            old = next(iter(self._lru))
            self._lru.pop(old)
            self.peft.delete_adapter(old)
        self.peft.set_adapter(name)
        self.model = self.peft
        return contextlib.nullcontext()

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationSettings,
        schemas: Sequence[dict | None] | None = None,
        on_text: Callable[[int, str], None] | None = None,
        on_token: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Texts per prompt. `schemas` (one JSON Schema or None per prompt) constrains each
        answer to that shape (xgrammar); greedy or sampling only, not beam search.

        `on_text(i, delta)` (streaming) gets prompt i's text in pieces as it is generated
        (continuous path: token by token; otherwise whole, when its batch ends); the pieces
        of a prompt joined equal its returned text. `on_token(i, token_id)` (continuous path)
        is told of each token as it is chosen: cheap progress for a watchdog."""
        self.last_token_counts = None
        encoded = [self.encode(p) for p in prompts]
        grammars = self._grammars(schemas, config) if schemas else [None] * len(encoded)
        stops = config.stop + tuple(self.fmt.stop_strings())
        if self.continuous and not self.prompt_learning and config.num_beams == 1:
            deltas = TextDeltas(self.tok, stops, on_text) if on_text is not None else None
            decoder = self._decoder(
                config.jump_forward or config.lookup_drafts > 0,
                self._closer if any(g is not None for g in grammars) else None,
            )
            tick = deltas.push if deltas else on_token
            if deltas and on_token:

                def tick(i: int, tok: int) -> None:
                    deltas.push(i, tok)
                    on_token(i, tok)

            ids = decoder.run(encoded, config, grammars, tick)
            self.last_stats = dict(decoder.stats)
            self.last_token_counts = [len(x) for x in ids]
            out = [cut_at_stop(self.tok.decode(x, skip_special_tokens=True), stops) for x in ids]
            if deltas is not None:
                deltas.finish(len(out))
            return out
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(encoded)
        counts = [0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            texts, n = self._generate_batch(
                [encoded[i] for i in idx], config, [grammars[i] for i in idx]
            )
            for i, t, k in zip(idx, texts, n):
                out[i], counts[i] = cut_at_stop(t, stops), k
                if on_text is not None and out[i]:
                    on_text(i, out[i])
        self.last_token_counts = counts
        return out

    def _decoder(self, jump_forward: bool, closer=None) -> ContinuousDecoder:
        """kgc's continuous decode loop over this engine's model and slots."""
        return ContinuousDecoder(
            self.model,
            eos_ids=self.eos_ids,
            pad_id=self.tok.pad_token_id,
            slots=self.batch_size,
            prefix=self.prefix_cache,
            device=self.device,
            jump_forward=jump_forward,
            encode_text=lambda t: self.tok(t, add_special_tokens=False)["input_ids"],
            step_overhead_tokens=self.step_overhead_tokens,
            closer=closer,
            spellings=self._spellings,
            decode_text=self.tok.decode,
        )

    @property
    def serves_continuously(self) -> bool:
        """Whether `serve` can run (kgc's decode loop; not prompt-learning adapters)."""
        return self.continuous and not self.prompt_learning

    def serve(self, take: Callable[[int], list[ServeRequest]]) -> None:
        """Serve's continuous path: decode requests as they arrive. `take(free)` gives up to
        `free` waiting requests (called whenever slots are free); each joins the running
        batch at the next step and its `done` is called the moment its answer ends. Returns
        when no request is decoding and `take` gives none. A request whose prompt or schema
        fails gets its error alone; an error in the decode loop itself propagates (the
        caller retries the requests still open one by one)."""
        from kgc.modeling.continuous import Job

        reqs: dict[int, ServeRequest] = {}
        stops = tuple(self.fmt.stop_strings())
        counter = [0]

        def cancelled(i: int) -> bool:
            """The client of prompt i left: forgotten here, its row dropped by the loop."""
            r = reqs.get(i)
            if r is None or r.is_cancelled is None or not r.is_cancelled():
                return False
            del reqs[i]
            deltas.forget(i)
            return True

        def emit(i: int, piece: str) -> None:
            cb = reqs[i].on_text
            if cb is not None:
                cb(piece)

        deltas = TextDeltas(self.tok, stops, emit)

        def feed(free: int) -> list:
            jobs = []
            for r in take(free):
                try:
                    ids = self.encode(r.prompt)
                    grammar = self.compile_schema(r.schema) if r.schema else None
                except Exception as exc:  # this request alone
                    r.done(None, exc)
                    continue
                if grammar is not None and decoder.closer is None:
                    decoder.closer = self._closer
                reqs[counter[0]] = r
                counter[0] += 1
                jobs.append(Job(ids, grammar, r.max_new_tokens))
            return jobs

        def on_token(i: int, tok: int) -> None:
            if reqs[i].on_text is not None:
                deltas.push(i, tok)

        def on_done(i: int, ids: list[int]) -> None:
            r = reqs[i]
            if r.on_text is not None:  # its last piece (text held back) still reaches it
                deltas.finish_one(i)
                deltas.forget(i)
            del reqs[i]
            text = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), stops)
            r.done(text, None, len(ids))

        decoder = self._decoder(True)
        first = feed(self.batch_size)  # the prompts whose common prefix is prefilled once
        decoder.run(
            [j.ids for j in first],
            GenerationSettings(max_new_tokens=max([j.budget for j in first] or [1])),
            [j.grammar for j in first],
            on_token,
            feed=feed,
            on_done=on_done,
            budgets=[j.budget for j in first],
            cancelled=cancelled,
        )
        self.last_stats = dict(decoder.stats)

    def compile_schema(self, schema: dict):
        """The compiled grammar of one answer schema (cached); a KgcError saying why when
        xgrammar cannot compile it. Serve calls this per request, before batching."""
        if self._grammar_cache is None:
            from kgc.modeling.constrained import GrammarCache

            vocab = self.model.get_input_embeddings().weight.shape[0]
            self._grammar_cache = GrammarCache(self.tok, vocab, self.eos_ids)
        return self._grammar_cache.get(schema)

    @property
    def _closer(self):
        """How constrained answers close within their budget (built with the first grammar)."""
        if self._closer_obj is None:
            from kgc.modeling.constrained import Closer

            self._closer_obj = Closer(self.tok, self._grammar_cache.vocab_size, self.eos_ids)
        return self._closer_obj

    def count_tokens(self, prompt: Prompt, text: str) -> tuple[int, int]:
        """(prompt tokens as fed to the model, tokens of the answer's text) for usage."""
        return len(self.encode(prompt)), len(self.tok(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt as fed to the model (Serve's admission check, usage)."""
        return len(self.encode(prompt))

    @property
    def max_token_chars(self) -> int:
        """The most characters one token of the vocabulary spells (its byte-level or
        sentencepiece form, never shorter than its text): a prompt of more characters than
        this × a token budget cannot fit the budget, known without tokenizing it."""
        if self._max_token_chars is None:
            self._max_token_chars = max(1, max(map(len, self.tok.get_vocab()), default=1))
        return self._max_token_chars

    def min_answer_tokens(self, schema: dict) -> int | None:
        """max_new_tokens the shortest answer of `schema` needs (end-of-turn included), or
        None if unknown. Serve refuses a constrained request with a smaller budget."""
        grammar = self.compile_schema(schema)
        return self._closer.min_tokens(grammar)

    def _grammars(self, schemas: Sequence[dict | None], config: GenerationSettings) -> list:
        if config.num_beams > 1:
            raise KgcError("constrained decoding supports greedy or sampling, not num_beams > 1")
        return [self.compile_schema(s) if s else None for s in schemas]

    def _generate_batch(
        self, batch: list[list[int]], config: GenerationSettings, grammars: list
    ) -> tuple[list[str], list[int]]:
        """Texts of one static batch, and the token ids each answer generated (up to its end
        of turn; padding after it not counted)."""
        import torch

        pad = self.tok.pad_token_id
        shared = 0
        if self.prefix_cache and not self.prompt_learning and config.num_beams == 1:
            shared = shared_prefix_len(batch)
        ids, mask = pad_after_prefix(batch, shared, pad)
        width = ids.shape[1]
        ids, mask = ids.to(self.device), mask.to(self.device)
        gen = None
        if config.seed is not None:
            torch.manual_seed(config.seed)
            gen = torch.Generator(device=self.device).manual_seed(config.seed)
        eos = None if config.ignore_eos else self.eos_ids
        constrain = None
        if any(g is not None for g in grammars):
            from kgc.modeling.constrained import GrammarLogitsProcessor

            constrain = GrammarLogitsProcessor(grammars, self._grammar_cache.vocab_size, width)
        with torch.no_grad():
            if self.prompt_learning:
                from kgc.modeling.generation import prompt_learning_generate

                seqs = prompt_learning_generate(
                    self.model,
                    ids,
                    mask,
                    max_new_tokens=config.max_new_tokens,
                    eos_token_id=eos,
                    pad_token_id=pad,
                    do_sample=config.do_sample,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    generator=gen,
                    logits_processor=constrain,
                )
            else:
                kwargs = dict(
                    max_new_tokens=config.max_new_tokens,
                    do_sample=config.do_sample,
                    num_beams=config.num_beams,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
                if config.do_sample:
                    kwargs.update(temperature=config.temperature, top_p=config.top_p)
                    if config.top_k:
                        kwargs["top_k"] = config.top_k
                if config.repetition_penalty != 1.0:
                    kwargs["repetition_penalty"] = config.repetition_penalty
                if constrain is not None:
                    kwargs["logits_processor"] = GrammarLogitsProcessor.as_hf(constrain)
                if shared:
                    # prefill the shared prefix once and give every row a copy of its cache
                    cache = self.model(input_ids=ids[:1, :shared], use_cache=True).past_key_values
                    cache.batch_repeat_interleave(len(batch))
                    kwargs[cache_keyword(self.model)] = cache
                seqs = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = seqs[:, width:]
        stop = set() if eos is None else set(eos)  # generate pads only after an end of turn
        counts = [
            next((k for k, t in enumerate(row) if t in stop), len(row)) for row in new.tolist()
        ]
        return [self.tok.decode(row, skip_special_tokens=True) for row in new], counts
