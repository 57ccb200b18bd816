"""Continuous batching for Hugging Face models: kgc's own decode loop.

transformers' `generate` decodes a static batch: every row waits until the longest answer of
its batch has ended, so a batch of short constrained answers with one long one runs as long
as the long one, mostly on rows that are already done. This loop keeps up to `slots` rows
decoding; a row that ends leaves at once, and the next prompts are prefilled and join the
batch at the next step. With `prefix`, the prompts' common token prefix (chat header,
instruction text, schema) is prefilled once per call and every prompt's prefill starts from
its cache, so only each prompt's own tokens (the document) are prefilled.

The cache holds one row per active slot, every layer's keys and values shaped
[rows, heads, columns, dim]. Rows are right-aligned (each row's newest token sits in the last
column) and a 0/1 mask [rows, columns] says which columns a row attends to; positions are
passed per row (its count of real tokens so far), so each row sees exactly the positions and
keys it would see alone. Columns no row attends to any more are dropped. Greedy answers equal
`generate`'s up to floating-point ties (tests; `bench/extract_throughput.py` counts them).

Prompt-learning adapters and beam search are not handled here (the engine routes them to
`generate`). LoRA adapters are: the loop only calls the model's forward.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kgc.engine import GenerationSettings

MIN_SHARED_PREFIX = 16  # tokens; below this a separate prefill costs more than it saves


def shared_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with (each keeps at least one of its own), or 0 when too
    few to be worth a separate prefill or there is one prompt only."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(x) for x in prompts) - 1
    for x in prompts[1:]:
        i = 0
        while i < n and x[i] == first[i]:
            i += 1
        n = i
    return n if n >= MIN_SHARED_PREFIX else 0


def cache_keyword(model) -> str:
    """The forward's name for the KV cache: `cache` (transformers ≥ 5.2x) or the older
    `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def kv_of(cache) -> list[tuple]:
    """[(keys, values)] per layer of a transformers DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def make_cache(kv: list[tuple], layers: list | None = None):
    """A transformers DynamicCache over `kv` whose layers append in place (`_room_layer`).
    A layer of `layers` (the previous forward's) whose keys and values are exactly the given
    tensors is reused as it is: a decode step then copies nothing of the cache; others get a
    new buffer with room (one copy, when rows joined, left or were compacted)."""
    from transformers import DynamicCache

    cls = _room_layer()
    built = []
    for i, (k, v) in enumerate(kv):
        old = layers[i] if layers is not None and i < len(layers) else None
        if isinstance(old, cls) and old.keys is k and old.values is v:
            built.append(old)
        else:
            built.append(cls(k, v))
    cache = DynamicCache()
    cache.layers = built
    return cache


def _kgc_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
              is_causal=None, **kwargs):  # fmt: skip
    """transformers' SDPA attention, except for several query tokens with a mask on grouped
    key/value heads (prefills and multi-token steps here): there transformers copies keys
    and values once per query head (`repeat_kv`) because CUDA's kernels need it, while
    torch's CPU kernel takes the groups as they are (`enable_gqa`), ≈10× faster for this
    loop's masks. Same numbers (tests)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None
    if groups > 1 and query.shape[2] > 1 and attention_mask is not None and plain:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
            enable_gqa=True,
        )  # fmt: skip
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)  # fmt: skip


def use_cpu_attention(model) -> bool:
    """Route a CPU model's SDPA attention through `_kgc_sdpa` (registered with transformers
    as "kgc_sdpa"); True if done. Models on other attention implementations are left alone."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    impl = getattr(base.config, "_attn_implementation", None)
    if impl == "kgc_sdpa":
        return True
    if impl != "sdpa" or not hasattr(base, "set_attn_implementation"):
        return False
    AttentionInterface.register("kgc_sdpa", _kgc_sdpa)
    AttentionMaskInterface.register("kgc_sdpa", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    base.set_attn_implementation("kgc_sdpa")
    return getattr(base.config, "_attn_implementation", None) == "kgc_sdpa"


_ROOM_LAYER = None


def _room_layer():
    """transformers' DynamicLayer grows by `torch.cat` (a copy of the whole cache per forward,
    and one more to build a cache from tensors). This layer keeps keys and values in buffers
    with room at the end: new columns are written in place, and the buffer doubles when full."""
    global _ROOM_LAYER
    if _ROOM_LAYER is not None:
        return _ROOM_LAYER
    from transformers.cache_utils import DynamicLayer

    class RoomLayer(DynamicLayer):
        def __init__(self, keys, values, room: int = 32):
            super().__init__()
            self._fill(keys, values, room)

        def _fill(self, keys, values, room: int) -> None:
            n = keys.shape[-2]
            self._k = keys.new_empty((*keys.shape[:-2], n + room, keys.shape[-1]))
            self._v = values.new_empty((*values.shape[:-2], n + room, values.shape[-1]))
            self._k[..., :n, :].copy_(keys)
            self._v[..., :n, :].copy_(values)
            self.n = n
            self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            w = key_states.shape[-2]
            if self.n + w > self._k.shape[-2]:
                self._fill(self.keys, self.values, max(64, self.n + w))
            self._k[..., self.n : self.n + w, :].copy_(key_states)
            self._v[..., self.n : self.n + w, :].copy_(value_states)
            self.n += w
            self.keys, self.values = self._k[..., : self.n, :], self._v[..., : self.n, :]
            return self.keys, self.values

    _ROOM_LAYER = RoomLayer
    return RoomLayer


class Spellings:
    """Forced text → the tokens the model produced for it, and whether they end exactly
    where the text ends (`whole`; else its next token ran past the text, and the draft stops
    short of that token). The tokenizer's own spelling of a forced string is often not the
    model's (`{"l` `oc` `ated` for `located`, ` [{` where ` [` is forced), and a draft the
    model does not confirm is dropped at that token. Drafts are still verified, so a
    spelling learned from one row never changes another row's answer. Bounded: once full,
    nothing more is learned."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._known: dict[str, tuple[tuple[int, ...], bool]] = {}

    def get(self, text: str) -> tuple[tuple[int, ...], bool] | None:
        return self._known.get(text)

    def put(self, text: str, tokens: Sequence[int], whole: bool) -> None:
        if text in self._known or len(self._known) < self.limit:
            self._known[text] = (tuple(tokens), whole)

    def __len__(self) -> int:
        return len(self._known)


@dataclass
class Job:
    """A prompt joining a running decode (`ContinuousDecoder.run(feed=...)`): its token ids,
    compiled grammar (or None) and token budget."""

    ids: Sequence[int]
    grammar: object | None = None
    budget: int = 256


@dataclass
class _Row:
    index: int  # the prompt's index in the call
    pos: int  # position of the next token fed for this row
    budget: int = 256  # max new tokens of this row
    matcher: object | None = None
    tokens: list[int] = field(default_factory=list)  # generated and verified
    pending: list[int] = field(default_factory=list)  # to feed next
    drafts: int = 0  # how many of `pending` (its tail) are forced tokens not yet verified
    prev: object = None  # logits after the last fed token, when `pending` is not empty
    close_len: int = 64  # tokens its answer needed to close when last measured (a guess first)
    watch: tuple[str, int] | None = None  # (forced text, token index it starts at): learning
    hist: list[int] = field(default_factory=list)  # prompt + verified tokens (lookup drafts)
    grams: dict = field(default_factory=dict)  # last 2/3 tokens → where what followed starts
    dropped: bool = False  # its request was cancelled: retired without `on_done`


class ContinuousDecoder:
    """Continuous-batching greedy / sampling decoder over a causal LM's forward.

    `jump_forward` (greedy): drafts, proposed at once and fed to the model in one
    multi-token step instead of one step each, of two kinds: where the grammar allows
    exactly one continuation string (keys, brackets, quotes, the rest of the only name that
    fits), its tokens, spelled as the model spelled that text before (`Spellings`); and
    (`config.lookup_drafts`, prompt lookup) the tokens that followed the row's last 3 (or 2)
    tokens where they last occurred in its prompt or answer, as far as the grammar allows
    (names are copied from the input; answers repeat keys and values). Drafts are verified
    as in speculative decoding: a draft token is kept only if it is the model's own
    (grammar-masked) greedy choice at its position; at the first that is not, the model's
    choice is taken, the rest is dropped (its cache columns masked), so the answer is
    exactly the greedy answer, in fewer, wider forwards. A step feeds up to K
    tokens per row; K is chosen per step to feed the most tokens per unit of cost, with a
    forward's fixed cost worth `step_overhead_tokens` tokens (measured ≈ 50 on 2 CPU cores
    for a 135M model; larger on a GPU)."""

    def __init__(
        self,
        model,
        *,
        eos_ids: Sequence[int],
        pad_id: int,
        slots: int = 16,
        prefix: bool = True,
        device: str = "cpu",
        jump_forward: bool = False,
        encode_text: Callable[[str], list[int]] | None = None,
        step_overhead_tokens: int = 48,
        closer=None,
        spellings: Spellings | None = None,
        decode_text: Callable[[list[int]], str] | None = None,
    ):
        self.model = model
        self.eos = set(eos_ids)
        self.pad = pad_id if pad_id is not None else 0
        self.slots = max(1, slots)
        self.prefix = prefix
        self.device = device
        self.jump = jump_forward and encode_text is not None
        self.encode_text = encode_text
        self.overhead = max(0, step_overhead_tokens)
        # constrained rows near the end of their budget: a token after which the answer can
        # no longer close in the tokens left is replaced by the closing path
        # (kgc.modeling.constrained.Closer), so answers always parse
        self.closer = closer
        # how the model itself spells forced strings (learned from its verified tokens, kept
        # by the engine across runs): drafted that way, fewer drafts are rejected
        self.spellings = spellings if spellings is not None else Spellings()
        self.decode_text = decode_text
        self.cache_kw = cache_keyword(model)
        self._layers: list | None = None  # the last forward's cache layers (reused in place)
        if str(device).startswith("cpu"):
            use_cpu_attention(model)
        self.trace: list | None = None  # a list: rejected drafts are recorded (diagnostics)
        self.stats = {
            "forwards": 0,
            "prefills": 0,
            "decode_steps": 0,
            "prefix_tokens": 0,
            "tokens": 0,
            "forced_tokens": 0,
            "forced_rejected": 0,
            "padded_tokens": 0,
            "closed_early": 0,
            "lookup_tokens": 0,
            "cancelled": 0,
        }
        self.lookup = 0  # lookup drafts per step (the run's generation.lookup_drafts)
        self.forced = False  # forced text drafted (the run's generation.jump_forward)

    def _forward(self, ids, mask, positions, kv, keep: int = 1):
        """Logits of the last `keep` columns [rows, keep, vocab] and the updated (keys,
        values) per layer."""
        self.stats["forwards"] += 1
        cache = make_cache(kv if kv is not None else [], self._layers)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{self.cache_kw: cache},
        )
        cache = output_cache(out)
        self._layers = list(cache.layers)
        return out.logits[:, -keep:].float(), kv_of(cache)

    def _drafts(self, row: _Row, room: int, lookup: bool = True) -> list[int]:
        """Draft tokens after the row's verified tokens (at most `room`): what the grammar
        forces, and where nothing is forced, lookup drafts (`lookup`: allowed for this row),
        checked on a fork of its matcher (the matcher itself accepts only verified
        tokens)."""
        if not self.jump or room <= 0:
            return []
        if row.matcher is None:
            return self._lookup(row, [], room, None) if lookup else []
        if row.matcher.is_terminated():
            return []
        fork = row.matcher.fork()
        out: list[int] = []
        looked = 0
        while len(out) < room:
            try:
                text = fork.find_jump_forward_string() if self.forced else ""
            except UnicodeDecodeError:  # the forced bytes end inside a character
                break
            if not text:
                if not lookup or looked >= self.lookup:
                    break
                got = self._lookup(row, out, min(room - len(out), self.lookup - looked), fork)
                if not got:
                    break
                out += got
                looked += len(got)
                continue
            if not out and row.watch is None and self.decode_text is not None:
                row.watch = (text, len(row.tokens))  # learn how the model spells it
            known = self.spellings.get(text)
            toks, whole = known if known is not None else (self.encode_text(text), True)
            took = 0
            for tok in toks:
                if len(out) >= room or not fork.accept_token(tok):
                    break
                out.append(tok)
                took += 1
            if not took or not whole:
                break  # the model's next token runs past the forced text: it picks it
        self.stats["forced_tokens"] += len(out) - looked
        return out

    def may_look_up(self, row: _Row, room: int) -> bool:
        """Lookup drafts are free choices that skip the closing check (`_Ctx._close_instead`):
        none for a constrained row whose answer may have to close soon."""
        if self.closer is None or row.matcher is None:
            return True
        return room > row.close_len + 32 + self.lookup

    def _lookup(self, row: _Row, out: list[int], room: int, fork) -> list[int]:
        """Tokens that followed the row's last tokens (with `out`) where they occurred
        before in its prompt or answer, as far as the grammar (`fork`) allows: names are
        copied from the input, and answers repeat their own keys and values."""
        if room <= 0 or not self.lookup:
            return []
        seq = row.hist[-3:] + out[-3:]
        start = None
        for n in (3, 2):
            if len(seq) >= n:
                start = row.grams.get(tuple(seq[-n:]))
                if start is not None:
                    break
        if start is None:
            return []
        got: list[int] = []
        for tok in row.hist[start : start + min(room, self.lookup)]:
            if tok in self.eos or (fork is not None and not fork.accept_token(tok)):
                break
            got.append(tok)
        self.stats["lookup_tokens"] += len(got)
        return got

    def _width(self, pending: list[int]) -> int:
        """Tokens per row this step: the K that feeds the most real tokens per unit of
        cost (cost ∝ overhead + rows × K)."""
        most = max(pending)
        best, rate = 1, -1.0
        k = 1
        while k <= most:
            r = sum(min(p, k) for p in pending) / (self.overhead + len(pending) * k)
            if r > rate:
                best, rate = k, r
            k *= 2
        return best

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        config: GenerationSettings,
        grammars: Sequence[object | None] | None = None,
        on_token: Callable[[int, int], None] | None = None,
        *,
        feed: Callable[[int], list[Job]] | None = None,
        on_done: Callable[[int, list[int]], None] | None = None,
        budgets: Sequence[int] | None = None,
        cancelled: Callable[[int], bool] | None = None,
    ) -> list[list[int]]:
        """The generated token ids per prompt (end-of-turn token not included).

        `grammars`: a compiled xgrammar grammar or None per prompt (constrained decoding).
        `on_token(i, token)` is called for every token of prompt i as soon as it is chosen
        (streaming).

        Open-ended (Serve): `feed(free)` is asked for up to `free` more prompts whenever
        slots are free; they join the running batch and are numbered after the ones before
        them; the run ends when no row is left and `feed` gives nothing. `on_done(i, ids)`
        is called as soon as prompt i's answer ends. `budgets`: max new tokens per prompt
        (default: `config.max_new_tokens`). `cancelled(i)`, asked for every waiting and
        decoding prompt at every step: True drops it (its slot is freed at once, no
        `on_done`; its ids so far stay in the result)."""
        import torch

        prompts = list(prompts)
        n = len(prompts)
        grammars = list(grammars) if grammars is not None else [None] * n
        budgets = list(budgets) if budgets is not None else [config.max_new_tokens] * n
        out: list[list[int]] = [[] for _ in range(n)]
        if n == 0 and feed is None:
            return out
        gen = None
        if config.seed is not None:
            torch.manual_seed(config.seed)
            gen = torch.Generator(device=self.device).manual_seed(config.seed)
        jump = self.jump and not config.do_sample  # drafts are verified against greedy
        self.lookup = config.lookup_drafts if jump else 0
        self.forced = jump and config.jump_forward  # else drafts from lookup only
        ctx = _Ctx(self, config, gen, out, on_token, jump, prompts)
        shared = shared_prefix_len(prompts) if self.prefix else 0
        head = list(prompts[0][:shared]) if prompts else []  # the prefix later prompts share
        prefix_kv = None
        with torch.no_grad():
            if shared:
                ids = torch.tensor([list(prompts[0][:shared])], device=self.device)
                _, prefix_kv = self._forward(ids, torch.ones_like(ids), None, None)
                self.stats["prefix_tokens"] += shared
            # longest prompts first: prompts prefilled together are of similar length
            queue = deque(sorted(range(n), key=lambda i: -len(prompts[i])))
            rows: list[_Row] = []
            kv = mask = None
            while True:
                free = self.slots - len(rows) - len(queue)
                if feed is not None and free > 0:
                    for job in feed(free):
                        queue.append(len(prompts))
                        prompts.append(list(job.ids))
                        grammars.append(job.grammar)
                        budgets.append(job.budget)
                        out.append([])
                if cancelled is not None:
                    self._drop(cancelled, queue, rows)
                if not queue and not rows:
                    break
                free = self.slots - len(rows)
                if queue and free > 0 and (not rows or free >= max(1, self.slots // 8)):
                    take = [queue.popleft() for _ in range(min(free, len(queue)))]
                    # prompts that joined later share the prefix only if they start with it
                    sh = shared if all(
                        list(prompts[i][:shared]) == head for i in take
                    ) else 0  # fmt: skip
                    new, new_kv, new_mask = self._admit(take, prompts, grammars, budgets, sh,
                                                        prefix_kv if sh else None, ctx)  # fmt: skip
                    kv, mask = _join(kv, mask, new_kv, new_mask)
                    rows += new
                alive = [r for r, row in enumerate(rows) if row.pending]
                for row in rows:
                    if row.pending:
                        continue
                    if on_done is not None and not row.dropped:
                        on_done(row.index, out[row.index])
                    if feed is not None:  # open-ended (Serve): a run lasts as long as the
                        # traffic, so an ended prompt's data is let go (no result is returned)
                        i = row.index
                        prompts[i], grammars[i], out[i] = head if i == 0 else (), None, []
                if not alive:
                    rows, kv, mask = [], None, None
                    continue
                if len(alive) < len(rows):
                    idx = torch.tensor(alive, device=mask.device)
                    rows = [rows[r] for r in alive]
                    kv = [(k[idx], v[idx]) for k, v in kv]
                    mask = mask[idx]
                    kv, mask = _trim(kv, mask)
                kv, mask = _compact(kv, mask)
                kv, mask = self._step(rows, kv, mask, ctx)
        return out

    def _drop(self, cancelled, queue: deque, rows: list[_Row]) -> None:
        """Prompts whose request was cancelled leave: waiting ones from the queue, decoding
        ones marked done (the step's compaction removes their cache rows)."""
        if queue:
            keep = [i for i in queue if not cancelled(i)]
            self.stats["cancelled"] += len(queue) - len(keep)
            queue.clear()
            queue.extend(keep)
        for row in rows:
            if not row.dropped and cancelled(row.index):
                row.dropped = True
                row.pending, row.drafts, row.prev = [], 0, None
                self.stats["cancelled"] += 1

    def _admit(self, take, prompts, grammars, budgets, shared, prefix_kv, ctx):
        """Prefill new prompts (with what their grammar forces at the start, as drafts):
        their rows, cache and mask."""
        new: list[_Row] = []
        for i in take:
            m = None
            if grammars[i] is not None:
                import xgrammar as xgr

                m = xgr.GrammarMatcher(grammars[i])
            row = _Row(index=i, pos=len(prompts[i]), budget=budgets[i], matcher=m)
            if ctx.jump and self.lookup:
                for tok in prompts[i]:
                    _remember(row, tok)
            row.pending = (
                self._drafts(row, row.budget, self.may_look_up(row, row.budget)) if ctx.jump else []
            )
            row.drafts = len(row.pending)
            new.append(row)
        keep = 1 + max(row.drafts for row in new)
        logits, kv, mask = self._prefill(
            [list(prompts[row.index]) + row.pending for row in new], shared, prefix_kv, keep
        )
        for r, row in enumerate(new):
            fed = row.pending
            row.pending, row.prev = [], None
            row.pos += len(fed)
            cols = logits[r, keep - 1 - len(fed) :]  # after the prompt, then after each draft
            self._settle(row, r, fed, len(fed), cols[1:], cols[0], mask, ctx)
        return new, kv, mask

    def _step(self, rows: list[_Row], kv, mask, ctx):
        """Feed every row up to K of its pending tokens (right-aligned, the rest of the K
        columns masked) in one forward; verify drafts, pick next tokens."""
        import torch

        width = self._width([len(row.pending) for row in rows])
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        step_mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        feeds = []
        for r, row in enumerate(rows):
            feed = row.pending[:width]
            f = len(feed)
            ids[r, width - f :] = torch.tensor(feed, dtype=torch.long)
            step_mask[r, width - f :] = 1
            positions[r, width - f :] = torch.arange(row.pos, row.pos + f)
            self.stats["padded_tokens"] += width - f
            feeds.append(feed)
        mask = torch.cat([mask, step_mask.to(mask.device)], dim=1)
        keep = width if ctx.jump else 1
        logits, kv = self._forward(ids.to(self.device), mask, positions.to(self.device), kv, keep)
        self.stats["decode_steps"] += 1
        for r, (row, feed) in enumerate(zip(rows, feeds)):
            f = len(feed)
            # drafts among the fed tokens: the tail of pending holds `row.drafts` of them
            fed_drafts = max(0, f - (len(row.pending) - row.drafts))
            row.pending = row.pending[f:]
            row.drafts -= fed_drafts
            row.pos += f
            cols = logits[r, keep - f :]  # after each fed token
            prev, row.prev = row.prev, None
            if row.pending:  # the rest is fed next step; verify what was fed
                self._verify(row, r, feed, fed_drafts, prev, cols, mask, ctx, more=True)
            else:
                self._settle(row, r, feed, fed_drafts, cols, prev, mask, ctx)
        return kv, mask

    def _verify(self, row, r, feed, fed_drafts, prev, cols, mask, ctx, more) -> bool:
        """Check the fed drafts (the last `fed_drafts` of `feed`) against the model's greedy
        choices; on the first miss take the model's token, drop the rest. False on a miss
        or an end (the row's next pending is set)."""
        f = len(feed)
        first = f - fed_drafts
        for j in range(first, f):
            logits = prev if j == 0 else cols[j - 1]
            choice = ctx.pick(row, logits)
            if choice != feed[j]:
                if self.trace is not None:  # (answer so far, draft token, model's token)
                    self.trace.append((list(row.tokens[-4:]), feed[j], choice))
                dropped = f - j + len(row.pending)
                self.stats["forced_rejected"] += dropped
                width = mask.shape[1]
                mask[r, width - (f - j) :] = 0  # the dropped drafts' columns
                row.pos -= f - j
                row.pending, row.drafts, row.prev = [], 0, None
                ctx.choose(row, choice)
                return False
            ctx.accept(row, feed[j])
        if more:
            row.prev = cols[f - 1]
        return True

    def _settle(self, row, r, feed, fed_drafts, cols, prev, mask, ctx) -> None:
        """After a row's pending tokens are all fed: verify the drafts among them, then
        choose its next token from the logits after the last one (`cols`: one column after
        each fed token; `prev`: the logits before the first)."""
        if fed_drafts and not self._verify(row, r, feed, fed_drafts, prev, cols, mask, ctx, False):
            return
        ctx.choose(row, ctx.pick(row, cols[-1] if len(feed) else prev))

    def _prefill(self, batch: list[Sequence[int]], shared: int, prefix_kv, keep: int = 1):
        """Prefill prompts (after their shared prefix, whose cache is given): the last
        `keep` columns' logits, the cache and the mask, rows right-aligned."""
        import torch

        own = [list(p[shared:]) for p in batch]
        width = max(len(x) for x in own)
        ids = torch.full((len(own), width), self.pad, dtype=torch.long)
        own_mask = torch.zeros((len(own), width), dtype=torch.long)
        positions = torch.zeros((len(own), width), dtype=torch.long)
        for r, x in enumerate(own):
            ids[r, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            own_mask[r, width - len(x) :] = 1
            positions[r, width - len(x) :] = torch.arange(shared, shared + len(x))
        mask = torch.cat([torch.ones((len(own), shared), dtype=torch.long), own_mask], dim=1)
        kv = None
        if prefix_kv is not None:
            kv = [
                (k.expand(len(own), -1, -1, -1).contiguous(),
                 v.expand(len(own), -1, -1, -1).contiguous())
                for k, v in prefix_kv
            ]  # fmt: skip
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        logits, kv = self._forward(ids, mask, positions, kv, keep)
        self.stats["prefills"] += 1
        return logits, kv, mask


class _Ctx:
    """One `run`'s choosing: picks (grammar-masked greedy or sampling), accepting,
    emitting, ending rows."""

    def __init__(self, dec: ContinuousDecoder, config, gen, out, on_token, jump: bool, prompts):
        self.dec, self.config, self.gen, self.out, self.on_token = dec, config, gen, out, on_token
        self.prompts = prompts
        self.jump = jump
        self.stop = set() if config.ignore_eos else dec.eos
        self.vocab = 0

    def pick(self, row: _Row, logits) -> int:
        from kgc.modeling.generation import _pick, penalize

        self.vocab = logits.shape[-1]
        c = self.config
        if c.repetition_penalty != 1.0:
            logits = penalize(logits, list(self.prompts[row.index]) + row.tokens,
                              c.repetition_penalty)  # fmt: skip
        logits = _constrain([row], logits[None])
        return int(_pick(logits, c.do_sample, c.temperature, c.top_p, self.gen, c.top_k)[0])

    def accept(self, row: _Row, tok: int) -> None:
        """A verified token: into the grammar, the answer and the stream."""
        if row.matcher is not None and not row.matcher.is_terminated():
            row.matcher.accept_token(tok)
        row.tokens.append(tok)
        if self.jump and self.dec.lookup:
            _remember(row, tok)
        if row.watch is not None:
            self._learn(row)
        self.out[row.index] = row.tokens
        self.dec.stats["tokens"] += 1
        if self.on_token is not None:
            self.on_token(row.index, tok)

    def _learn(self, row: _Row) -> None:
        """Once the row's verified tokens cover the forced text it watches: remember how the
        model spelled it (the tokens inside it; `whole` False when the last one ran past)."""
        text, start = row.watch
        got = self.dec.decode_text(row.tokens[start:])
        if len(got) < len(text):
            return
        row.watch = None
        if got == text:
            self.dec.spellings.put(text, row.tokens[start:], whole=True)
        elif got.startswith(text) and len(row.tokens) - start > 0:
            self.dec.spellings.put(text, row.tokens[start:-1], whole=False)

    def choose(self, row: _Row, tok: int) -> None:
        """The model's token for the row: the answer ends (stop token, budget, nothing but a
        stop left) or it becomes the next token fed, followed by the grammar's drafts."""
        row.pending, row.drafts = [], 0
        if len(row.tokens) >= row.budget:
            return  # verified drafts filled the budget: the model's next token is not taken
        if tok in self.stop:
            if row.matcher is not None and not row.matcher.is_terminated():
                row.matcher.accept_token(tok)
            return
        if self._close_instead(row, tok):
            return
        self.accept(row, tok)
        room = row.budget - len(row.tokens)
        if room <= 0 or (self.stop and _only_stop(row, self.stop, self.vocab)):
            return  # nothing the model could add
        row.pending = [tok]
        if self.jump:
            drafts = self.dec._drafts(row, room, lookup=self.dec.may_look_up(row, room))
            row.pending += drafts
            row.drafts = len(drafts)

    def _close_instead(self, row: _Row, tok: int) -> bool:
        """Near the end of the budget: if the answer could not close after `tok` in the
        tokens left, end it now with the closing path instead (True). Checked while the
        tokens left are within a margin of what closing last needed, so a token that
        lengthens the closing by up to the margin is still caught in time."""
        closer, m = self.dec.closer, row.matcher
        room = row.budget - len(row.tokens)
        if closer is None or m is None or m.is_terminated() or room > row.close_len + 32:
            return False
        after = closer.path(m, row.tokens, first=tok)
        if after is None:
            return False  # no closing path known (e.g. a string from a fixed list)
        row.close_len = len(after) + 1
        if len(after) + 1 <= room:
            return False
        now = closer.path(m, row.tokens)
        if now is None or len(now) > room:
            return False
        for t in now:
            self.accept(row, t)
        self.dec.stats["closed_early"] += 1
        return True


def _remember(row: _Row, tok: int) -> None:
    """Append a token to the row's history and index the 2- and 3-token runs before it."""
    h = row.hist
    h.append(tok)
    for n in (2, 3):
        if len(h) > n:
            row.grams[tuple(h[-n - 1 : -1])] = len(h) - 1


def _only_stop(row: _Row, stop: set, vocab: int) -> bool:
    """The row's grammar is complete and allows nothing but an end-of-turn token: the model
    could only end the answer, so the step that would pick that token is skipped."""
    m = row.matcher
    if m is None or m.is_terminated() or not m.is_completed():
        return False
    try:
        if m.find_jump_forward_string():
            return False
    except UnicodeDecodeError:
        return False
    import torch
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(1, vocab)
    m.fill_next_token_bitmask(bitmask, 0)
    bits = (bitmask[0, :, None] >> torch.arange(32, dtype=torch.int32)) & 1
    allowed = set(bits.flatten().nonzero().flatten().tolist())
    return bool(allowed) and allowed <= stop


def _join(kv, mask, new_kv, new_mask):
    """Append new rows to the cache, right-aligned (the narrower side left-padded with
    masked zero columns)."""
    import torch

    if kv is None:
        return new_kv, new_mask
    a, b = mask.shape[1], new_mask.shape[1]
    width = max(a, b)

    def pad(t, cols, dim):
        if cols == 0:
            return t
        shape = list(t.shape)
        shape[dim] = cols
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    kv = [
        (
            torch.cat([pad(k, width - a, 2), pad(nk, width - b, 2)]),
            torch.cat([pad(v, width - a, 2), pad(nv, width - b, 2)]),
        )
        for (k, v), (nk, nv) in zip(kv, new_kv)
    ]
    return kv, torch.cat([pad(mask, width - a, 1), pad(new_mask, width - b, 1)])


def _trim(kv, mask):
    """Drop the leading columns no row attends to (left by rows that have left)."""
    used = mask.sum(0).nonzero()
    first = int(used[0]) if len(used) else 0
    if first == 0:
        return kv, mask
    return [(k[:, :, first:], v[:, :, first:]) for k, v in kv], mask[:, first:]


def _compact(kv, mask, waste: float = 0.25):
    """When more than `waste` of the cache is masked (padding of multi-token steps, dropped
    drafts), move every row's attended columns to the right end, in order, and cut the
    width to the longest row: attention and cache copies then cost what the real tokens
    cost. A row's positions are explicit, so moving its columns changes nothing it sees."""
    import torch

    rows, width = mask.shape
    counts = mask.sum(1)
    if rows == 0 or 1 - float(counts.sum()) / (rows * width) <= waste:
        return kv, mask
    new_width = int(counts.max())
    # per row: the indices of its attended columns, right-aligned in the new width
    order = torch.argsort(mask, dim=1, stable=True)[:, width - new_width :]
    new_mask = torch.gather(mask, 1, order)
    idx = order[:, None, :, None]
    out = []
    for k, v in kv:
        shape = (rows, k.shape[1], new_width, k.shape[3])
        out.append((torch.gather(k, 2, idx.expand(shape)), torch.gather(v, 2, idx.expand(shape))))
    return out, new_mask


def _constrain(rows: list[_Row], logits):
    """Logits with every token the row's grammar forbids masked out (rows without a
    grammar, or whose grammar has ended, are left as they are)."""
    live = [
        r
        for r, row in enumerate(rows)
        if row.matcher is not None and not row.matcher.is_terminated()
    ]
    if not live:
        return logits
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(len(rows), logits.shape[-1])
    xgr.reset_token_bitmask(bitmask)
    for r in live:
        rows[r].matcher.fill_next_token_bitmask(bitmask, r)
    logits = logits.clone()
    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=logits.shape[-1], indices=live)
    return logits
