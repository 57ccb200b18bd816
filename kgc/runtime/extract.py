"""The extraction job on Ray Data: the driver `run_extract` and its actor `ExtractUDF`.

The driver builds the rows (`kgc.extract`), sets aside what earlier runs left in the shards
that is not one of this input's rows (`kgc.shards`), sends the rows not yet written through
the actor pool (`kgc.runtime.pool`: each actor loads its engine once, then generates,
parses and writes one shard per batch), checks the shards again, and writes the merge,
scores and summary.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from kgc.config import ExtractConfig
from kgc.extract import HEARTBEAT, clear_results, finish, input_rows
from kgc.progress import Rate
from kgc.rows import TOO_LONG, Row
from kgc.shards import SHARDS, SetAside, remove_partial_shards, settle_rows, write_shard


# ----------------------------------------------------------------------------- the driver
def run_extract(cfg: ExtractConfig, *, progress: bool = True, fresh: bool = False) -> dict:
    """Run (or resume) an extraction; returns the summary (also written next to the rows).

    The summary counts what was set aside before and after generating: `shards_corrupt`,
    `rows_duplicate`, `rows_not_in_input`, `rows_changed` (a row whose fingerprint is not
    this run's: other text, task, model or generation settings), with each moved shard
    under `set_aside`. `fresh`: clear the output folder's old results first."""
    from kgc.modeling.engines import offsets_fn

    _resolve_model(cfg)
    rows, n_docs = input_rows(cfg, lambda: offsets_fn(cfg.engine))
    out_dir = Path(cfg.output.path)
    if fresh:
        for p in clear_results(out_dir):
            print(f"kgc extract: --fresh: removed {p}", file=sys.stderr, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_shards(out_dir)
    # what earlier runs left: unreadable shards, copies of a row, rows of documents no longer
    # in the input, rows made from another text, task, model or settings are set aside
    # (counted, warned about), so that a rerun always converges to this run's rows
    expected = {r["id"]: r for r in rows}
    aside = SetAside()
    done = {r["id"] for r in settle_rows(out_dir, expected, aside)}
    todo = [r for r in rows if r["id"] not in done]
    start = time.time()
    if todo:
        _generate(cfg, todo, out_dir, progress)
    elapsed = time.time() - start
    # again after the run: a retried batch may have rewritten some rows under another name
    kept = settle_rows(out_dir, expected, aside)
    return finish(
        cfg,
        kept,
        set(expected),
        aside,
        documents=n_docs,
        rows_this_run=len(todo),
        seconds=elapsed,
    )


def _resolve_model(cfg: ExtractConfig) -> None:
    """A .gguf file or a prepared model's name → its HF folder, once, before any actor."""
    if cfg.engine.type in ("hf", "vllm") and cfg.engine.model:
        from kgc.modeling.prepare import resolve_model_path

        cfg.engine.model = resolve_model_path(cfg.engine.model)


def _generate(cfg: ExtractConfig, todo: list[Row], out_dir: Path, progress: bool) -> None:
    """The rows through the actor pool; each actor writes its batches as shards."""
    from kgc.runtime.cluster import ensure_ray
    from kgc.runtime.pool import run_pool

    ensure_ray()
    done, rate = [0], Rate("kgc extract", len(todo))
    warned = [False]

    def report(batch) -> None:
        done[0] += len(batch)
        if not warned[0] and "device" in batch and (batch["device"] == "cpu").any():
            warned[0] = True
            line = cpu_fallback_line(cfg.workers.gpus_per_actor)
            if line:  # said once per run, whichever actor it is
                print(f"[kgc extract] {line}", file=sys.stderr, flush=True)
        if progress:
            rate.show(done[0])

    run_pool(
        todo,
        ExtractUDF,
        args=(cfg.model_dump(mode="json", by_alias=True), str(out_dir), os.getcwd()),
        actors=cfg.workers.num_actors,
        batch_size=cfg.rows_per_call(),
        blocks=max(1, min(len(todo) // 64, 200)),
        num_cpus=cfg.workers.cpus_per_actor,
        num_gpus=cfg.workers.gpus_per_actor,
        fields={"CPU": "workers.cpus_per_actor", "GPU": "workers.gpus_per_actor"},
        scale_up_grace_s=cfg.workers.scale_up_grace_s,
        on_batch=report,
        heartbeat=lambda: Heartbeat.read(out_dir / HEARTBEAT),
        stall_s=cfg.stall_timeout_s,
        what="extraction",
        advice="Rows written so far are kept; rerun the same command to resume. Check the "
        "actors' logs (ray logs) for a hung engine, or raise stall_timeout_s for very slow "
        "models.",
    )


def cpu_fallback_line(gpus_per_actor: float) -> str | None:
    """The line said when actors that asked for GPUs found no CUDA (a node whose GPUs are
    declared but not usable, a CPU build of torch): the engine runs on CPU, much slower."""
    if not gpus_per_actor:
        return None
    return (
        f"workers.gpus_per_actor={gpus_per_actor:g} but CUDA is not available on this node: "
        "running on CPU"
    )


# ----------------------------------------------------------------------------- the actor
class ExtractUDF:
    """Ray Data actor: loads the engine once, then generates, parses and writes batches."""

    def __init__(self, cfg_json: dict, out_dir: str, cwd: str | None = None):
        from kgc.modeling.engines import build_engine
        from kgc.runtime.cluster import follow_driver_cwd
        from kgc.tasks import get

        follow_driver_cwd(cwd)  # the config's relative paths name the driver's files
        self.cfg = ExtractConfig.model_validate(cfg_json)
        if self.cfg.workers.gpus_per_actor == 0:
            import torch

            # intra-op threads = the CPUs Ray reserved for this actor, rounded up (1.5 CPUs
            # leave half a core to Ray Data's read tasks and still compute on 2 threads)
            torch.set_num_threads(max(1, math.ceil(self.cfg.workers.cpus_per_actor)))
        self.engine = build_engine(self.cfg.engine)
        # the HF engine picks CUDA when torch sees it, else CPU (kgc.modeling.hf_engine);
        # other engines do not say
        self.device = str(getattr(self.engine, "device", "") or "")
        line = cpu_fallback_line(self.cfg.workers.gpus_per_actor)
        if line and self.device == "cpu":
            logging.getLogger("kgc.extract").warning(line)  # once per actor, in its log
        self.gen = self.cfg.generation
        self.task = get(self.cfg.task)
        self.out = Path(out_dir) / SHARDS
        self.out.mkdir(parents=True, exist_ok=True)
        self.batches = 0
        self.heartbeat = Heartbeat(Path(out_dir) / HEARTBEAT)
        params = inspect.signature(self.engine.generate).parameters
        # the HF engine tells of each token: the driver's watchdog sees a long batch move
        self.tick = {"on_token": self.heartbeat.tick} if "on_token" in params else {}
        self.compiler = None  # a worker thread that compiles grammars under a time limit
        self.slow: set[str] = set()  # schemas whose grammar did not compile in time

    def __call__(self, batch: dict) -> dict:
        ids = [str(x) for x in batch["id"]]
        self.heartbeat.beat()
        prompts = list(batch["instruction"])
        schemas = self._schemas(batch)
        # rows that cannot run get their error and are not generated; the rest still run
        failures = self._too_long(prompts)
        if schemas:
            failures = [f or self._compiles(s) for f, s in zip(failures, schemas)]
        run = [i for i, f in enumerate(failures) if f is None]
        outputs = [""] * len(prompts)
        if run:
            texts, errs = self._generate(
                [prompts[i] for i in run], [schemas[i] for i in run] if schemas else None
            )
            for i, text, err in zip(run, texts, errs):
                outputs[i], failures[i] = text, err
        self.heartbeat.beat()
        rows, n_errors, n_records = [], [], []
        for i, text in enumerate(outputs):
            parsed = self.task.parse(text)
            if failures[i]:  # kept as a row with its error, never dropped in silence
                parsed.errors.insert(0, f"engine error: {failures[i]}")
            row = {k: _plain(batch[k][i]) for k in batch}
            if not isinstance(row.get("label"), str):
                row["label"] = None  # Ray turns an all-None column into NaN floats
            row.update(
                output=text,
                records=json.dumps(parsed.records, ensure_ascii=False),
                errors=json.dumps(parsed.errors, ensure_ascii=False),
                model_id=self.engine.model_id,
            )
            rows.append(row)
            n_errors.append(bool(parsed.errors))
            n_records.append(len(parsed.records))
        write_shard(self.out, rows, self.cfg.output.format)
        self.batches += 1
        return {
            "id": ids,
            "parse_error": n_errors,
            "n_records": n_records,
            "device": [self.device] * len(ids),  # the driver says a CPU fallback once
        }

    def _schemas(self, batch: dict) -> list[dict] | None:
        """Answer schemas per row (constrained decoding), from each row's schema split;
        with `grounded`, strings must be spans of the row's input text."""
        g = self.cfg.generation
        if not g.constrained:
            return None
        from kgc.schema_splits import answer_schema

        texts = (
            [json.loads(i).get("input", "") for i in batch["instruction"]]
            if g.grounded
            else [None] * len(batch["schema"])
        )
        return [
            answer_schema(
                self.task,
                json.loads(s),
                max_text_chars=g.max_text_chars,
                max_list_items=g.max_list_items,
                grounded_in=t,
                grounded_max_words=g.grounded_max_words,
                grounded_max_spans=g.grounded_max_spans,
            )
            for s, t in zip(batch["schema"], texts)
        ]

    def _too_long(self, prompts: list[str]) -> list[str | None]:
        """Per prompt, None or why it is not generated: its tokens and the answer's budget
        (generation.max_new_tokens) exceed the model's context, or its tokens exceed
        engine.max_prompt_tokens (`kgc.engine.prompt_room`, the check Serve makes too;
        the smaller limit is named). Such a prompt would fail or run out of memory
        mid-batch; measured before generating, it is a named row error and the rest of the
        batch runs."""
        from kgc.engine import prompt_room

        cap, budget = self.cfg.engine.max_prompt_tokens, self.gen.max_new_tokens
        room = prompt_room(self.engine, budget, cap)
        if room is None:
            return [None] * len(prompts)
        out: list[str | None] = []
        for p in prompts:
            n = room.count(p)
            if n <= room.tokens:
                out.append(None)
            elif room.capped:
                out.append(
                    f"{TOO_LONG}: {n} prompt tokens > engine.max_prompt_tokens {cap}; lower "
                    "chunk.max_tokens (or split_num) or raise engine.max_prompt_tokens"
                )
            else:
                out.append(
                    f"{TOO_LONG}: {n} prompt tokens + generation.max_new_tokens {budget} > "
                    f"{room.context}, the model's context ({room.source or 'its context'}); "
                    "lower chunk.max_tokens (or split_num) or generation.max_new_tokens"
                )
        return out

    def _compiles(self, schema: dict | None) -> str | None:
        """None once the answer grammar of `schema` is compiled (the engine caches it), or
        why not: it cannot be compiled, or not within `grammar_timeout_s` (a grammar that
        large would hold the actor for minutes; the compile is left to finish on its own
        thread, and the same schema fails at once from then on)."""
        compile_schema = getattr(self.engine, "compile_schema", None)
        if schema is None or compile_schema is None:
            return None
        from concurrent.futures import ThreadPoolExecutor, TimeoutError

        limit = self.cfg.grammar_timeout_s
        key = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        slow = (
            f"the answer grammar did not compile within {limit:g} s (grammar_timeout_s); "
            "lower generation.grounded_max_spans or grounded_max_words, or raise "
            "grammar_timeout_s"
        )
        if key in self.slow:
            return slow
        if self.compiler is None:
            self.compiler = ThreadPoolExecutor(1, thread_name_prefix="kgc-grammar")
        job = self.compiler.submit(compile_schema, schema)
        try:
            job.result(timeout=limit)
        except TimeoutError:
            self.slow.add(key)
            self.compiler.shutdown(wait=False)  # its thread finishes alone; the next is new
            self.compiler = None
            return slow
        except Exception as exc:  # noqa: BLE001 - a KgcError saying why, kept on the row
            return f"{type(exc).__name__}: {exc}"[:500]
        return None

    def _generate(
        self, prompts: list[str], schemas: list[dict] | None = None
    ) -> tuple[list[str], list[str | None]]:
        """Texts per prompt; if the batch fails, prompts are retried one by one and a prompt
        that still fails gets an empty text and its error."""
        extra = {"schemas": schemas} if schemas else {}
        extra.update(self.tick)
        try:
            return self.engine.generate(prompts, self.gen, **extra), [None] * len(prompts)
        except Exception:  # noqa: BLE001 - isolate the failing prompt(s) below
            texts, errs = [], []
            for i, p in enumerate(prompts):
                one = {"schemas": [schemas[i]]} if schemas else {}
                one.update(self.tick)
                try:
                    texts.append(self.engine.generate([p], self.gen, **one)[0])
                    errs.append(None)
                except Exception as exc:  # noqa: BLE001
                    texts.append("")
                    errs.append(f"{type(exc).__name__}: {exc}"[:500])
            return texts, errs


class Heartbeat:
    """A file the actor touches while it works (at most every `every_s`), so the driver's
    stall watchdog (`kgc.runtime.pool.drain`) sees progress inside a long batch: on a busy
    machine one batch can take longer than stall_timeout_s while tokens keep coming."""

    def __init__(self, path: Path, every_s: float = 2.0):
        self.path, self.every_s, self.last = path, every_s, 0.0

    def beat(self) -> None:
        self.last = time.monotonic()
        with contextlib.suppress(OSError):  # a heartbeat is a hint; it never fails a batch
            self.path.touch()

    def tick(self, _i: int = 0, _token: int = 0) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.beat()

    @staticmethod
    def read(path: Path) -> int | None:
        """What the driver compares: the file's modification time (ns), None if absent."""
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None


def _plain(v):
    return v.item() if hasattr(v, "item") else v
