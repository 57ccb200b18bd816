"""Parse-error rate and speed with and without schema-constrained decoding, in one run on
the same model and prompts (the IEPile test instructions of all seven tasks):

    python bench/constrained_decoding.py [--checkpoint runs/…/checkpoint_…] [--new-tokens 480]

Without --checkpoint the model is a random-weight LLaMA built locally (the worst case: it
almost never writes the task's JSON by itself); with a kgc checkpoint (e.g. the one
`make demo` trains) it is that model. Prints per task and overall: parse-error rate free vs
constrained, rows/s of both, and the speed ratio constrained/free.

The default budget (480 tokens) is enough for the longest answer the caps allow (8-char
strings, 2-item lists) even when every character is three byte-level tokens; with less, a
random model that writes maximal answers can still be cut off. Measured here (2 CPUs, random
LLaMA): parse errors 95.9 % free → 0.0 % constrained, constrained 2.35× faster (answers end
instead of running to the token limit).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _models import add_model_arg, bench_model

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")


def instructions(per_task: int) -> list[tuple[str, str, list]]:
    rows = []
    for task in TASKS:
        lines = (ROOT / "examples/iepile" / task / "test.json").read_text().splitlines()
        for line in [x for x in lines if x.strip()][:per_task]:
            rec = json.loads(line)
            rows.append((task, rec["instruction"], json.loads(rec["instruction"])["schema"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a kgc checkpoint (default: a random model)")
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=480)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-text-chars", type=int, default=8)
    ap.add_argument("--max-list-items", type=int, default=2)
    add_model_arg(ap, "tiny")
    args = ap.parse_args()

    from kgc.engine import GenerationSettings, bounded
    from kgc.modeling.hf_engine import HFEngine
    from kgc.tasks import get

    if args.checkpoint:
        engine = HFEngine(checkpoint=args.checkpoint, batch_size=args.batch_size)
        label = f"checkpoint {args.checkpoint}"
    else:
        model, label = bench_model(args.model, Path(tempfile.mkdtemp()))
        engine = HFEngine(model, batch_size=args.batch_size)
    print(f"model={label}", flush=True)
    rows = instructions(args.per_task)
    prompts = [p for _, p, _ in rows]
    schemas = [
        bounded(get(t).output_schema(c), args.max_text_chars, args.max_list_items)
        for t, _, c in rows
    ]
    gen = GenerationSettings(max_new_tokens=args.new_tokens)
    engine.generate(prompts[:2], gen, schemas[:2])  # warm-up (grammar compile, first call)
    results = {}
    for name, extra in (("free", None), ("constrained", schemas)):
        t0 = time.perf_counter()
        texts = engine.generate(prompts, gen, extra)
        dt = time.perf_counter() - t0
        errs = [bool(get(t).parse(x).errors) for (t, _, _), x in zip(rows, texts)]
        results[name] = (errs, len(rows) / dt)
    print(f"model: {engine.model_id}; {len(rows)} instructions, ≤{args.new_tokens} new tokens")
    print(f"{'task':6} {'errors free':>12} {'constrained':>12}")
    for task in TASKS:
        idx = [i for i, (t, _, _) in enumerate(rows) if t == task]
        f = sum(results["free"][0][i] for i in idx) / len(idx)
        c = sum(results["constrained"][0][i] for i in idx) / len(idx)
        print(f"{task:6} {f:12.1%} {c:12.1%}")
    f_all = sum(results["free"][0]) / len(rows)
    c_all = sum(results["constrained"][0]) / len(rows)
    print(f"{'all':6} {f_all:12.1%} {c_all:12.1%}")
    rf, rc = results["free"][1], results["constrained"][1]
    print(f"rows/s: free {rf:.2f}, constrained {rc:.2f}; ratio constrained/free {rc / rf:.2f}")


if __name__ == "__main__":
    main()
