"""Extraction throughput, measured in one run on the same model and prompts:

  (a) DeepKE-style loop: one prompt at a time through `generate`;
  (b) a plain batched `generate` loop in this process at kgc's batch size (length-sorted,
      left-padded: kgc's HFEngine without Ray);
  (c) the kgc pipeline on Ray Data (`run_extract`), with 1 and with 2 actors;

    python bench/extract_throughput.py [--rows 256] [--a-rows 32] [--batch-size 32]
    python bench/extract_throughput.py --model smollm2 --rows 64 --a-rows 8 [--batch-size 32]

Model: a LLaMA-architecture model built locally (hidden 512, 8 layers ≈ 25M parameters) so
compute, not Python overhead, dominates; greedy decoding of exactly `--new-tokens` (≥ 32)
tokens per row (EOS suppressed so every path does the same work). (a) is timed on the first
`--a-rows` prompts (it is the slow one); rates are rows/s. Prints c/a and c/b.
Targets from the issue: c/a ≥ 25, c/b ≥ 0.8.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _models import add_model_arg, bench_model

ROOT = Path(__file__).resolve().parent.parent


def prompts_and_corpus(tmp: Path, rows: int) -> tuple[list[str], Path]:
    """`rows` NER instructions over distinct sample sentences, and the same as a corpus."""
    from kgc.sampling import SamplingOptions
    from kgc.tasks import get

    texts = []
    for task in ("NER", "RE", "EE", "SPO"):
        for line in (ROOT / "examples/iepile" / task / "sample.json").read_text().splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    docs = [{"id": f"d{i}", "text": f"{i}. {texts[i % len(texts)]}"} for i in range(rows)]
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    ner = get("NER")
    chunk = ner.test_chunks(None, _schema(), None, SamplingOptions(split_num=6), "")[0]
    return [ner.instruction("zh", chunk, d["text"]) for d in docs], corpus


def _schema():
    from kgc.schema import read_schema

    return read_schema(ROOT / "examples/iepile/NER/schema.json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--a-rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    add_model_arg(ap, "small")
    args = ap.parse_args()

    import ray
    import torch

    from kgc.config import ExtractConfig, load_config
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine
    from kgc.runtime.extract import run_extract

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model, label = bench_model(args.model, tmp)
        prompts, corpus = prompts_and_corpus(tmp, args.rows)
        # every path generates exactly new-tokens tokens: EOS is not a stop
        gen = GenerationSettings(max_new_tokens=args.new_tokens, ignore_eos=True)

        eng = HFEngine(str(model), batch_size=1)
        t0 = time.perf_counter()
        eng.generate(prompts[: args.a_rows], gen)
        a = args.a_rows / (time.perf_counter() - t0)

        eng.batch_size = args.batch_size
        t0 = time.perf_counter()
        eng.generate(prompts, gen)
        b = len(prompts) / (time.perf_counter() - t0)
        del eng

        ray.init(
            num_cpus=args.threads,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        c = {}
        for actors in (1, 2):
            cfg = load_config(
                None,
                [],
                schema=ExtractConfig,
                data={
                    "input": {"path": str(corpus), "id_field": "id"},
                    "task": "NER",
                    "schema": str(ROOT / "examples/iepile/NER/schema.json"),
                    "split_num": 6,
                    "chunk": {"max_tokens": 512, "overlap": 0},
                    "engine": {"type": "hf", "model": str(model), "batch_size": args.batch_size},
                    "generation": {"max_new_tokens": args.new_tokens, "ignore_eos": True},
                    "workers": {"num_actors": actors, "cpus_per_actor": args.threads / actors},
                    "output": {"path": str(tmp / f"out{actors}")},
                },
            )
            summary = run_extract(cfg, progress=False)
            c[actors] = summary["rows"] / summary["seconds"]
        ray.shutdown()

    print(
        f"rows={args.rows} new_tokens={args.new_tokens} batch={args.batch_size} "
        f"threads={args.threads} model={label}"
    )
    print(f"{'path':<46} {'rows/s':>8}")
    print(f"{'(a) one prompt at a time (DeepKE-style)':<46} {a:8.2f}")
    print(f"{'(b) batched generate loop, one process':<46} {b:8.2f}")
    for k, v in c.items():
        print(f"{f'(c) kgc on Ray Data, {k} actor(s)':<46} {v:8.2f}")
    best = max(c.values())
    print(f"c/a = {best / a:.1f}x   c/b = {best / b:.2f}   (c = best of 1 and 2 actors)")
    print(f"c1/b = {c[1] / b:.2f}   c2/b = {c[2] / b:.2f}")


if __name__ == "__main__":
    main()
