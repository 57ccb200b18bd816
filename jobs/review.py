"""Corrections back into training, and the oracle measurement of the review queue.

    # the recipe: reviewed documents (kgc review) → IEPile records → the LoRA adapter
    # continued on them → the documents extracted again with it (docs/review.md)
    python -m jobs.review --corrections out/x/corrections.jsonl --checkpoint CKPT \
        --schema examples/demo/schema.json --out out/review [--input docs.jsonl]

    # does reviewing pay? (after `make demo`): an oracle reviewer (the gold facts) corrects
    # N documents chosen by the queue, and N chosen at random, from a pool the demo's
    # adapter extracted; each retrain starts from the demo's checkpoint; all are scored on
    # the demo's held-out documents (none of them in the pool)
    python -m jobs.review --oracle --demo out/demo --out out/review-oracle

    ray job submit --working-dir . -- python -m jobs.review --oracle --demo out/demo

Each stage is a function (`to_training`, `retrain`, `score_answers`, `extract_pool`,
`score_checkpoint`, `oracle`); `main` only parses arguments. `--model tiny` is what the
test runs (tests/test_review_job.py): the plumbing, not the gain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import time
from pathlib import Path

from jobs.demo import DATA, PRESETS, SCHEMA, extract_config, generate, score, train_config

# the retrain on the reviewed documents: fewer steps than the demo's fine-tune (20
# documents, one instruction each: 16 steps of 8 ≈ 6 passes) at a lower learning rate
RETRAIN = {"smollm2": {"steps": 16, "lr": 1e-3}, "tiny": {"steps": 2, "lr": 1e-3}}


def to_training(corrections: Path, schema: Path, out: Path, task: str = "SPO") -> int:
    """The documents marked done in a corrections file → IEPile training records at `out`
    (SPO: each fact typed from the schema's labels); returns the record count."""
    from kgc.convert import convert_file
    from kgc.io import write_jsonl_atomic
    from kgc.review.corrections import Corrections, training_records, typed
    from kgc.sampling import SamplingOptions
    from kgc.schema import read_schema

    records = training_records(Corrections(corrections).read())
    if task == "SPO":
        labels = list(read_schema(schema).types)
        records = [typed(r, labels) for r in records]
    raw = out.with_suffix(".raw.json")
    write_jsonl_atomic(raw, records)
    opts = SamplingOptions(split_num=-1)
    stats = convert_file(task, raw, schema, out, language="en", opts=opts)
    return stats.records_out


def retrain(checkpoint: str, train_file: Path, out: Path, preset: dict, steps: int, lr: float,
            name: str) -> str:  # fmt: skip
    """The checkpoint's LoRA adapter trained further on `train_file` (Ray Train); returns
    the new checkpoint."""
    import shutil

    from kgc.checkpoint import resolve_checkpoint
    from kgc.runtime.train import run

    shutil.rmtree(out / "runs" / name, ignore_errors=True)  # a retrain starts afresh
    model, adapter, _ = resolve_checkpoint(checkpoint)
    cfg = train_config(model.path, train_file, out, {**preset, "train": {**preset["train"],
                       "lr": lr}}, steps)  # fmt: skip
    cfg.method.adapter_path = adapter
    cfg.run.name = name
    return run(cfg).checkpoint.path


def score_answers(extract_dir: Path, checkpoint: str, batch_size: int = 8) -> Path:
    """Each row's answer scored by the model that wrote it (mean token log-probability) →
    answer_logprobs.jsonl in the extraction folder, which the review queue reads."""
    from kgc.io import write_jsonl_atomic
    from kgc.modeling.hf_engine import HFEngine
    from kgc.modeling.scoring import answer_logprobs
    from kgc.review.corpus import LOGPROBS
    from kgc.shards import read_rows

    rows = read_rows(extract_dir, ["id", "instruction", "output"])
    engine = HFEngine(checkpoint=checkpoint, batch_size=batch_size)
    lps = answer_logprobs(engine, [r["instruction"] for r in rows], [r["output"] for r in rows])
    path = extract_dir / LOGPROBS
    write_jsonl_atomic(path, ({"id": r["id"], "logprob": lp} for r, lp in zip(rows, lps)))
    return path


def make_pool(out: Path, n: int, seed: int = 20261231) -> Path:
    """`n` documents written like the held-out ones (their name pools and sentence
    patterns; examples/demo/make_data.py, another seed), with their gold facts: the pool the
    reviewer picks from. None of them is a held-out document."""
    spec = importlib.util.spec_from_file_location("demo_make_data", DATA / "make_data.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    docs = mk.make_split(random.Random(seed), "heldout", n, fresh=False)
    held = {json.loads(x)["text"] for x in (DATA / "heldout.json").read_text().splitlines()}
    pool = [{**d, "id": f"pool{i:03d}"} for i, d in enumerate(docs) if d["text"] not in held]
    path = out / "pool.json"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in pool))
    return path


def extract_pool(pool: Path, checkpoint: str, out: Path, preset: dict, name: str = "pool") -> Path:
    """The pool extracted as the demo extracts its corpus (Ray Data, constrained)."""
    from jobs.demo import BOUNDS
    from kgc.runtime.extract import run_extract

    corpus = out / f"{name}.corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n"
                              for d in map(json.loads, pool.read_text().splitlines())))  # fmt: skip
    cfg = extract_config(
        out, name, {"checkpoint": checkpoint}, preset,
        input={"path": str(corpus), "id_field": "id"}, schema=str(SCHEMA),
        split_num=preset["split_num"], chunk={"max_tokens": 1024, "overlap": 64},
        generation={"constrained": True, "grounded": True,
                    "max_new_tokens": preset["max_new_constrained"], **BOUNDS},
    )  # fmt: skip
    run_extract(cfg, progress=False)
    return out / name


def oracle_corrections(pool: Path, chosen: list[str], path: Path) -> Path:
    """The oracle reviewer: the chosen documents' gold facts, marked done."""
    from kgc.io import write_jsonl_atomic

    gold = {d["id"]: d for d in map(json.loads, pool.read_text().splitlines())}
    recs = [{"id": i, "text": gold[i]["text"],
             "relation": [{k: f[k] for k in ("head", "relation", "tail")} for f in gold[i]["relation"]],
             "review": {"done": True, "oracle": True}} for i in sorted(chosen)]  # fmt: skip
    write_jsonl_atomic(path, recs)
    return path


def score_checkpoint(checkpoint: str, records: list[dict], preset: dict, out: Path) -> float:
    """Triple F1 of the checkpoint's constrained answers to the held-out instructions."""
    from kgc.modeling.hf_engine import HFEngine

    engine = HFEngine(checkpoint=checkpoint, batch_size=preset["batch_size"])
    answers = generate(engine, records, preset, constrained=True)
    return score(records, answers, out)["scores"]["triple"]["f1"]


def oracle(demo: Path, out: Path, kind: str, n: int, pool_size: int, seed: int,
           score_docs: int | None = None, steps: int | None = None) -> dict:  # fmt: skip
    """Queue vs random, N documents each, from the demo's checkpoint; returns the table."""
    from jobs.demo import read_jsonl_list
    from kgc.review.corpus import load_corpus
    from kgc.review.queue import review_queue
    from kgc.runtime.cluster import ensure_ray

    preset, rt = PRESETS[kind], RETRAIN[kind]
    steps = steps or rt["steps"]
    out.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(demo)
    records = read_jsonl_list(demo / "spo.heldout.jsonl")[:score_docs]
    ensure_ray()
    times, t = {}, time.time()
    pool = make_pool(out, pool_size)
    folder = extract_pool(pool, ckpt, out, preset)
    score_answers(folder, ckpt, preset["batch_size"])
    times["pool extraction + answer scores"] = time.time() - t
    docs, _ = load_corpus(folder)
    queue = [d for d, _ in review_queue({d: x.signals for d, x in docs.items()})]
    picks = {"queue": queue[:n], "random": random.Random(seed).sample(sorted(docs), n)}
    t = time.time()
    table = {"before": score_checkpoint(ckpt, records, preset, out / "pred-before.jsonl")}
    times["score before"] = time.time() - t
    for how, chosen in picks.items():
        t = time.time()
        corr = oracle_corrections(pool, chosen, out / f"corrections-{how}.jsonl")
        train = out / f"train-{how}.jsonl"
        to_training(corr, SCHEMA, train)
        new = retrain(ckpt, train, out, preset, steps, rt["lr"], f"review-{how}")
        table[how] = score_checkpoint(new, records, preset, out / f"pred-{how}.jsonl")
        times[f"retrain + score ({how})"] = time.time() - t
    result = {"n": n, "pool": len(docs), "scored_docs": len(records), "steps": steps,
              "seed": seed, "f1": table, "picks": picks, "times": times}  # fmt: skip
    (out / "oracle.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n[review oracle] {n} reviewed documents of a pool of {len(docs)}; held-out F1 on "
          f"{len(records)} documents ({steps} steps from {ckpt})")  # fmt: skip
    print(f"  {'choice':<8} {'F1':>6} {'gain':>7}")
    print(f"  {'before':<8} {table['before']:6.3f} {'':>7}")
    for how in picks:
        print(f"  {how:<8} {table[how]:6.3f} {table[how] - table['before']:+7.3f}")
    print("[review oracle] times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    return result


def latest_checkpoint(demo: Path) -> str:
    """The demo's last checkpoint (its run folder under DEMO/runs/demo-spo-lora)."""
    from kgc.checkpoint import CONFIG_FILE

    run_dir = demo / "runs" / "demo-spo-lora"
    found = [c.parent for c in run_dir.rglob(CONFIG_FILE) if c.parent.name.startswith("checkpoint")]
    if not found:
        raise SystemExit(f"no demo checkpoint under {run_dir}; run `make demo` first")
    return str(max(found, key=lambda d: d.stat().st_mtime))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle", action="store_true", help="the queue-vs-random measurement")
    ap.add_argument("--demo", default="out/demo", help="(--oracle) the demo's output folder")
    ap.add_argument("--model", choices=tuple(PRESETS), default="smollm2")
    ap.add_argument("--n", type=int, default=20, help="(--oracle) documents reviewed")
    ap.add_argument("--pool", type=int, default=100, help="(--oracle) documents in the pool")
    ap.add_argument("--score-docs", type=int, help="(--oracle) score on the first N held-out")
    ap.add_argument("--seed", type=int, default=0, help="(--oracle) the random choice's seed")
    ap.add_argument("--steps", type=int, help="retraining steps (default: per model)")
    ap.add_argument("--corrections", help="the corrections file (kgc review)")
    ap.add_argument("--checkpoint", help="the checkpoint whose adapter continues")
    ap.add_argument("--schema", default=str(SCHEMA))
    ap.add_argument("--task", choices=("SPO", "RE"), default="SPO")
    ap.add_argument("--input", help="documents to extract again with the new checkpoint")
    ap.add_argument("--out", default="out/review")
    args = ap.parse_args(argv)
    from kgc.logs import quiet

    quiet(False, native=argv is None)
    out = Path(args.out).resolve()
    if args.oracle:
        oracle(Path(args.demo).resolve(), out, args.model, args.n, args.pool, args.seed,
               args.score_docs, args.steps)  # fmt: skip
        return 0
    if not (args.corrections and args.checkpoint):
        ap.error("--corrections and --checkpoint are needed (or --oracle)")
    from kgc.runtime.cluster import ensure_ray

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.jsonl"
    print(f"[review] {to_training(Path(args.corrections), Path(args.schema), train, args.task)} "
          f"training records → {train}")  # fmt: skip
    ensure_ray()
    rt = RETRAIN[args.model]
    ckpt = retrain(args.checkpoint, train, out, PRESETS[args.model], args.steps or rt["steps"],
                   rt["lr"], "review")  # fmt: skip
    print(f"[review] checkpoint {ckpt}")
    if args.input:
        from kgc.runtime.extract import run_extract

        cfg = extract_config(out, "extract", {"checkpoint": ckpt}, PRESETS[args.model],
                             task=args.task, input={"path": args.input}, schema=args.schema)  # fmt: skip
        print(f"[review] extracted again: {run_extract(cfg, progress=False)['output']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
