"""The main job end to end on an embedded local Ray, with a model kgc builds itself.

    python -m jobs.demo [--out out/demo] [--steps 80]

1. builds a tiny Qwen2-architecture model + tokenizer (random weights, no download);
2. converts the bundled NER samples into IEPile train/test instructions;
3. fine-tunes it with LoRA on Ray Train (checkpointed, resumable);
4. extracts with the checkpoint on a Ray Data actor pool: the test instructions (scored
   against their labels) and the raw sample texts as a corpus (chunked, merged per document).

The model only memorises six training sentences, so the scores say the pipeline works, not
that the model is good. With a real model: set model.path to e.g. /models/Qwen2.5-7B-Instruct.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "iepile" / "NER"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--steps", type=int, default=80)
    args = ap.parse_args(argv)

    from kgc.config import ExtractConfig, load_config
    from kgc.convert import convert_file
    from kgc.evaluate import format_table
    from kgc.extract import run_extract
    from kgc.finetune import run
    from kgc.modeling.tiny import build_tiny_model
    from kgc.raytools import ensure_ray
    from kgc.sampling import SamplingOptions

    out = Path(args.out).resolve()
    model = out / "model"
    if not (model / "config.json").exists():
        print(f"[demo] building a tiny Qwen2 model in {model}", flush=True)
        build_tiny_model(model, "qwen2")
    train, test = out / "ner.train.jsonl", out / "ner.test.jsonl"
    convert_file(
        "NER",
        SAMPLES / "sample.json",
        SAMPLES / "schema.json",
        train,
        opts=SamplingOptions(split_num=6),
    )
    convert_file(
        "NER",
        SAMPLES / "sample.json",
        SAMPLES / "schema.json",
        test,
        split="test",
        opts=SamplingOptions(split_num=6),
    )
    ensure_ray()
    cfg = load_config(
        None,
        [],
        data={
            "model": {"path": str(model)},
            "method": {"type": "lora", "lora": {"r": 16, "alpha": 32, "target_modules": "all"}},
            "data": {"train_file": str(train), "max_source_length": 256, "cutoff_len": 384},
            "train": {
                "max_steps": args.steps,
                "batch_size": 6,
                "save_every": 40,
                "lr": 1e-2,
                "log_every": 20,
                "warmup_ratio": 0.05,
            },
            "distributed": {"num_workers": 1, "cpus_per_worker": 1},
            "run": {"name": "demo-ner-lora", "storage_path": str(out / "runs")},
        },
    )
    print(f"[demo] fine-tuning with LoRA on Ray Train ({args.steps} steps)", flush=True)
    result = run(cfg)
    ckpt = result.checkpoint.path
    print(f"[demo] checkpoint {ckpt}  loss {result.metrics.get('loss', float('nan')):.3f}")

    common = {
        "task": "NER",
        "engine": {"type": "hf", "checkpoint": ckpt, "batch_size": 8},
        "generation": {"max_new_tokens": 48},
        "workers": {"num_actors": 1, "cpus_per_actor": 1},
    }
    for name in ("scored", "corpus"):
        shutil.rmtree(out / name, ignore_errors=True)  # the demo always extracts afresh
    scored = run_extract(
        load_config(
            None,
            [],
            schema=ExtractConfig,
            data={
                **common,
                "input": {"path": str(test), "format": "iepile"},
                "output": {"path": str(out / "scored")},
            },
        ),
        progress=False,
    )
    corpus = run_extract(
        load_config(
            None,
            [],
            schema=ExtractConfig,
            data={
                **common,
                "input": {"path": str(SAMPLES / "sample.json")},
                "schema": str(SAMPLES / "schema.json"),
                "split_num": 6,
                "chunk": {"max_tokens": 48, "overlap": 8},
                "output": {"path": str(out / "corpus")},
            },
        ),
        progress=False,
    )
    scores = scored.pop("scores")
    print("[demo] extraction over the corpus:", json.dumps(corpus, ensure_ascii=False))
    print("[demo] scores on the test instructions (the model saw these sentences in training):")
    print(format_table(scores))
    print(
        f"[demo] rows: {out / 'corpus' / 'rows'}  documents: {out / 'corpus' / 'documents.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
