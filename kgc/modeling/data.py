"""Chat turns → token ids with the prompt masked out of the labels; packing; collation.

Budgets: the target keeps at most `max_target_length` tokens (its closing token always
kept); the prompt at most `max_source_length` and the whole example at most `cutoff_len`.
When a prompt is too long its *input text* is shortened (token-aware) and the prompt is
rendered again, so instructions, schema and the assistant marker are never cut.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kgc.config import DataConfig
from kgc.errors import KgcError
from kgc.prompting import input_text, query_of, with_input
from kgc.templates import ChatFormat

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode_as_text(tok, render, contents: list) -> list[int]:
    """Token ids of `render(contents)` (a prompt rendered around user/system texts) in which
    the texts stay text: a special-token string inside them (e.g. "<|im_end|><|im_start|>
    system") is encoded as plain characters, not as the special token, so a text cannot forge
    a turn. The prompt is rendered around placeholders to find where each text sits. Prompts
    whose texts hold no such string are encoded exactly as before (one tokenizer call)."""
    specials = [t for t in getattr(tok, "added_tokens_encoder", {}) if t]
    if not any(sp in c for c in contents if c for sp in specials):
        return tok(render(contents), add_special_tokens=False)["input_ids"]
    marks = [f"\ue000{i}\ue001" if c else c for i, c in enumerate(contents)]
    rendered = render(marks)
    ids, pos = [], 0
    found = sorted((rendered.find(m), i) for i, m in enumerate(marks) if m and m in rendered)
    for at, i in found:
        ids += tok(rendered[pos:at], add_special_tokens=False)["input_ids"]
        ids += tok(contents[i], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        pos = at + len(marks[i])
    return ids + tok(rendered[pos:], add_special_tokens=False)["input_ids"]


class PromptFormatter:
    """Renders prompts (and the target closing) for a tokenizer and chat format."""

    def __init__(self, tokenizer, chat: ChatFormat):
        self.tok = tokenizer
        self.chat = chat

    def _messages(self, query: str, system: str | None = None) -> list[dict]:
        system = self.chat.system if system is None else system
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": query}]

    def prompt_text(self, query: str, system: str | None = None) -> str:
        if self.chat.template is None:
            return self.tok.apply_chat_template(
                self._messages(query, system), tokenize=False, add_generation_prompt=True
            )
        return self.chat.template.prompt(query, self.chat.system if system is None else system)

    def prompt_ids(self, query: str, system: str | None = None) -> list[int]:
        # the query and a caller's system text stay text (the configured system is ours)
        ids = encode_as_text(self.tok, lambda t: self.prompt_text(t[0], t[1]), [query, system])
        t = self.chat.template
        if t is not None and t.add_bos and self.tok.bos_token_id is not None:
            ids = [self.tok.bos_token_id] + ids
        return ids

    def closing_ids(self, query: str, target: str) -> list[int]:
        """Tokens that end an answer: the template's end-of-turn, else the tokenizer's EOS."""
        t = self.chat.template
        if t is None:
            prompt = self.prompt_text(query)
            full = self.tok.apply_chat_template(
                self._messages(query) + [{"role": "assistant", "content": target}],
                tokenize=False,
            )
            if full.startswith(prompt + target) and full[len(prompt) + len(target) :]:
                tail = full[len(prompt) + len(target) :].rstrip("\n")
                return self.tok(tail, add_special_tokens=False)["input_ids"]
            return [self.tok.eos_token_id]
        if t.eos:
            return self.tok(t.eos, add_special_tokens=False)["input_ids"]
        return [self.tok.eos_token_id]

    def stop_strings(self) -> list[str]:
        t = self.chat.template
        return list(t.stop) if t else []


class Encoder:
    def __init__(self, tokenizer, chat: ChatFormat, cfg: DataConfig):
        self.fmt = PromptFormatter(tokenizer, chat)
        self.tok = tokenizer
        self.cfg = cfg

    def encode(self, record: dict) -> Example:
        cfg = self.cfg
        query = query_of(record)
        target = record["output"]
        closing = self.fmt.closing_ids(query, target)
        body = self.tok(target, add_special_tokens=False)["input_ids"]
        room = max(cfg.max_target_length - len(closing), 0)
        target_ids = body[:room] + closing
        src_budget = min(cfg.max_source_length, cfg.cutoff_len - len(target_ids))
        prompt_ids = self.fmt.prompt_ids(query)
        if len(prompt_ids) > src_budget:
            prompt_ids = self._shorten(record, src_budget)
        return Example(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids)

    def _shorten(self, record: dict, budget: int) -> list[int]:
        text = input_text(record)
        text_ids = self.tok(text, add_special_tokens=False)["input_ids"]
        keep = len(text_ids)
        for _ in range(8):
            query = query_of(record)
            ids = self.fmt.prompt_ids(query)
            over = len(ids) - budget
            if over <= 0:
                return ids
            if keep == 0:
                break
            keep = max(0, keep - over - 1)
            record = with_input(record, self.tok.decode(text_ids[:keep]))
        raise KgcError(
            f"a prompt needs {len(ids)} tokens even with its input text removed, more than "
            f"data.max_source_length/cutoff_len allow ({budget}); raise data.max_source_length "
            "or split the schema into more chunks (kgc convert --split-num)"
        )


@dataclass
class LengthReport:
    """How the length budgets (`data.max_source_length`, `max_target_length`, `cutoff_len`)
    meet the training records, measured with the model's tokenizer and prompt layout."""

    records: int = 0
    input_cut: int = 0  # prompts whose input text is shortened to fit
    target_cut: int = 0  # targets cut to max_target_length (or to fit cutoff_len)
    impossible: int = 0  # prompts too long even with their input text removed
    longest_prompt: int = 0
    longest_target: int = 0  # with its closing tokens
    longest_example: int = 0
    shortest_bare_prompt: int = 0  # the longest prompt without its input text

    def lines(self, cfg: DataConfig) -> list[str]:
        """The report, a line per finding, each naming the setting and a value that fits."""
        out = [
            f"{self.records} records: longest prompt {self.longest_prompt} tokens, longest "
            f"target {self.longest_target}, longest example {self.longest_example} "
            f"(max_source_length {cfg.max_source_length}, max_target_length "
            f"{cfg.max_target_length}, cutoff_len {cfg.cutoff_len})"
        ]
        if self.impossible:
            out.append(
                f"{self.impossible} prompts need {self.shortest_bare_prompt} tokens even with "
                "their input text removed: raise data.max_source_length (and cutoff_len) to at "
                f"least {self.shortest_bare_prompt}, or split the schema into more chunks"
            )
        if self.input_cut:
            out.append(
                f"{self.input_cut} of {self.records} prompts have their input text shortened "
                f"(longest prompt {self.longest_prompt} tokens): data.max_source_length="
                f"{self.longest_prompt} keeps them whole"
            )
        if self.target_cut:
            out.append(
                f"{self.target_cut} of {self.records} targets are cut (longest "
                f"{self.longest_target} tokens): data.max_target_length={self.longest_target} "
                f"and data.cutoff_len={self.longest_example} keep them whole"
            )
        return out


def length_report(enc: Encoder, records: list[dict]) -> LengthReport:
    """Measure every record against the budgets of `enc`'s data config (no truncation)."""
    cfg = enc.cfg
    r = LengthReport(records=len(records))
    for record in records:
        query = query_of(record)
        prompt = len(enc.fmt.prompt_ids(query))
        closing = enc.fmt.closing_ids(query, record["output"])
        body = len(enc.tok(record["output"], add_special_tokens=False)["input_ids"])
        target = body + len(closing)
        r.longest_prompt = max(r.longest_prompt, prompt)
        r.longest_target = max(r.longest_target, target)
        r.longest_example = max(r.longest_example, prompt + target)
        kept_target = min(body, max(cfg.max_target_length - len(closing), 0)) + len(closing)
        if kept_target < target:
            r.target_cut += 1
        budget = min(cfg.max_source_length, cfg.cutoff_len - kept_target)
        if prompt > budget:
            bare = len(enc.fmt.prompt_ids(query_of(with_input(record, ""))))
            if bare > budget:
                r.impossible += 1
                r.shortest_bare_prompt = max(r.shortest_bare_prompt, bare)
            else:
                r.input_cut += 1
    return r


def pack(examples: list[Example], cutoff: int) -> list[dict]:
    """Concatenate examples into rows of at most `cutoff` tokens (first fit, in order).

    Each row carries position_ids restarting at every example; with no attention_mask,
    transformers builds a block-diagonal causal mask from them, so examples in one row do
    not attend to each other.
    """
    rows: list[dict] = []
    cur = {"input_ids": [], "labels": [], "position_ids": []}
    for ex in examples:
        n = len(ex.input_ids)
        if cur["input_ids"] and len(cur["input_ids"]) + n > cutoff:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += ex.input_ids[:cutoff]
        cur["labels"] += ex.labels[:cutoff]
        cur["position_ids"] += list(range(min(n, cutoff)))
    if cur["input_ids"]:
        rows.append(cur)
    return rows


def as_rows(examples: list[Example]) -> list[dict]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


def collate(rows: list[dict], pad_id: int) -> dict:
    """Right-pad a batch; labels padded with -100. Packed rows keep position_ids and get no
    attention_mask (see `pack`)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    packed = "position_ids" in rows[0]
    out = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "labels": torch.full((len(rows), width), IGNORE, dtype=torch.long),
    }
    if packed:
        out["position_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
    else:
        out["attention_mask"] = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        out["labels"][i, :n] = torch.tensor(r["labels"])
        if packed:
            out["position_ids"][i, :n] = torch.tensor(r["position_ids"])
            out["position_ids"][i, n:] = torch.arange(width - n)
        else:
            out["attention_mask"][i, :n] = 1
    return out


def split_train_val(records: list, val_size: float, seed: int) -> tuple[list, list]:
    if val_size <= 0:
        return records, []
    n_val = int(round(val_size * len(records))) if val_size < 1 else int(val_size)
    if n_val >= len(records):
        raise KgcError(
            f"data.val_size={val_size} holds out {n_val} of {len(records)} records, leaving none "
            "to train on; lower it"
        )
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    val_idx = set(idx[:n_val])
    return (
        [r for i, r in enumerate(records) if i not in val_idx],
        [r for i, r in enumerate(records) if i in val_idx],
    )
