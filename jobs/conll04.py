"""CoNLL04 (or any SpERT-format dataset) end to end, scored like the papers.

    python -m jobs.conll04 [--data DIR] [--out out/conll04] [--test FILE] [--model smollm2|tiny]
                           [--epochs N | --steps N] [--zero-shot N]

1. reads the SpERT files in `--data` (default `../shared/data/conll04` beside the repo: the
   `*train*.json`, `*dev*.json` and `*types*.json` there; docs/conll04.md says where to get
   CoNLL04) and converts them into IEPile RE instructions (`kgc.spert`: detokenized text,
   relation names from jobs/configs/conll04_names.json, every relation in one instruction);
2. scores the base model zero-shot on the first `--zero-shot` dev sentences, constrained and
   grounded (every subject and object a span of the sentence);
3. fine-tunes it with LoRA on Ray Train on the train split (`--epochs` passes);
4. scores the tuned model on the whole dev split (strict: both names exact, relation exact)
   and, with `--test FILE` (a SpERT file), writes `test.predictions.jsonl` (the IEPile test
   records with the model's `output`, what `kgc eval` reads) and, when the file has gold
   relations, `test.scores.json`.

It prints one table (zero-shot vs tuned: P, R, F1, per-relation F1, time of every stage)
beside the published test figures, then `dev F1 (strict): 0.xxx` and, with `--test`,
`test F1 (strict): 0.xxx`. Every setting below was chosen on dev: docs/conll04.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "conll04"
NAMES = ROOT / "jobs" / "configs" / "conll04_names.json"
TASK = "RE"

# The data's README: strict relation F1 on the test split (micro).
PUBLISHED = (
    ("SpERT (BERT-base, fine-tuned)", 0.715),
    ("CodeKGC (code-davinci-002, few-shot)", 0.498),
)

# Per model: fine-tuning and decoding settings (the sweep on dev: docs/conll04.md).
PRESETS = {
    "smollm2": {
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all"},
        "train": {"batch_size": 8, "lr": 2e-3, "warmup_ratio": 0.05, "shared_prefix": True},
        "epochs": 3.0,
        "split_num": -1,  # every relation in one instruction
        "data": {"max_source_length": 320, "cutoff_len": 480, "max_target_length": 160},
        "batch_size": 32,
        "max_new_tokens": 256,
        # a constrained answer: at most this many pairs per relation, names ≤ this long, spans
        # of up to this many words (CoNLL04's longest names: 8 words counting "U.S." as two)
        "bounds": {"max_text_chars": 96, "max_list_items": 6},
        "grounded_max_words": 8,
        "zero_shot": 16,
        # dev sentences whose answers training checks every tenth of the run (eval_exact: the
        # share greedy decoding would reproduce exactly; eval_loss)
        "eval_rows": 64,
    },
    "tiny": {
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all"},
        "train": {"batch_size": 4, "lr": 3e-3, "warmup_ratio": 0.05},
        "epochs": 1.0,
        "split_num": -1,
        "data": {"max_source_length": 320, "cutoff_len": 480, "max_target_length": 160},
        "batch_size": 8,
        "max_new_tokens": 96,
        "bounds": {"max_text_chars": 24, "max_list_items": 1},
        "grounded_max_words": 3,
        "zero_shot": 2,
        "eval_rows": 2,
    },
}


def find_split(data: Path, split: str) -> Path:
    """The dataset folder's `<name>_<split>.json` or `<name>_<split>.spert.json` (SpERT's
    own download names them conll04_train.json, …; its conll04_train_dev.json is not train)."""
    pattern = re.compile(rf"(?:^|[_.-]){split}(?:\.spert)?\.json$")
    found = sorted(
        p
        for p in data.glob("*.json")
        if pattern.search(p.name) and (split == "train" or "train" not in p.name)
    )
    if len(found) != 1:
        raise SystemExit(
            f"{data}: expected one *_{split}.json SpERT file, found "
            f"{[p.name for p in found] or 'none'}; --data names the folder holding "
            "<name>_train.json, <name>_dev.json and <name>_types.json (or *.spert.json)"
        )
    return found[0]


def find_types(data: Path) -> Path:
    found = sorted(data.glob("*types*.json"))
    if len(found) != 1:
        raise SystemExit(f"{data}: expected one *types*.json (SpERT's types file), found {found}")
    return found[0]


def answers(engine, records: list[dict], preset: dict) -> list[str]:
    """The engine's constrained, grounded answers to IEPile RE test records."""
    from kgc.engine import GenerationSettings
    from kgc.schema_splits import answer_schema
    from kgc.tasks import get

    task = get(TASK)
    schemas = []
    for r in records:
        inst = json.loads(r["instruction"])
        schemas.append(
            answer_schema(
                task,
                inst["schema"],
                **preset["bounds"],
                grounded_in=inst["input"],
                grounded_max_words=preset["grounded_max_words"],
            )
        )
    settings = GenerationSettings(max_new_tokens=preset["max_new_tokens"])
    return engine.generate([r["instruction"] for r in records], settings, schemas)


def strict_scores(records: list[dict], outputs: list[str]) -> dict:
    """`kgc eval --strict`'s report for the records answered by `outputs`."""
    from kgc.evaluate import EvalOptions, evaluate_rows

    rows = [{**r, "output": o} for r, o in zip(records, outputs, strict=True)]
    return evaluate_rows(TASK, list(enumerate(rows, 1)), opts=EvalOptions(strict=True))


def _train_config(model: str, train: Path, val: Path | None, out: Path, preset: dict, steps: int):
    from kgc.config import load_config

    val_keys = {"val_file": str(val)} if val else {}

    return load_config(
        None,
        [],
        data={
            "model": {"path": model},
            "method": {"type": "lora", "lora": preset["lora"]},
            "data": {"train_file": str(train), **val_keys, **preset["data"]},
            "train": {
                "max_steps": steps,
                "save_every": steps,
                "log_every": max(1, steps // 10),
                "eval_every": max(1, steps // 10) if val else 0,
                **preset["train"],
            },
            "distributed": {"num_workers": 1, "cpus_per_worker": 2},
            "run": {"name": "conll04-re-lora", "storage_path": str(out / "runs")},
        },
    )


class Recipe:
    """One run: its folder, preset, data, model; each method one stage, `main` in order."""

    def __init__(self, args):
        self.t0 = time.time()
        self.args = args
        self.preset = json.loads(json.dumps(PRESETS[args.model]))
        if args.lr:
            self.preset["train"]["lr"] = args.lr
        if args.lora_r:
            self.preset["lora"] |= {"r": args.lora_r, "alpha": 2 * args.lora_r}
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = Path(args.data).resolve()
        self.rows: dict[str, dict] = {}  # table row name → strict report
        self.timings: dict[str, float] = {}
        self.prep_s = 0.0

    def convert(self) -> None:
        from kgc import spert
        from kgc.sampling import SamplingOptions

        t = time.time()
        types = spert.read_types(find_types(self.data))
        self.names = spert.read_names(str(NAMES), types)
        train = spert.read_spert(find_split(self.data, "train"), types)
        self.schema = spert.build_schema(TASK, types, train, self.names)
        self.types = types
        opts = SamplingOptions(split_num=self.preset["split_num"])
        records, _ = self.instructions(train, "train", opts)
        self.train = self.out / "train.jsonl"
        _write(self.train, records)
        dev = spert.read_spert(find_split(self.data, "dev"), types)
        self.dev, _ = self.instructions(dev, "test", opts)
        _write(self.out / "dev.jsonl", self.dev)
        self.val = None
        n_eval = self.preset["eval_rows"]
        if n_eval:  # the first dev sentences with their gold answers, for eval_exact
            self.val = self.out / "dev.answers.jsonl"
            _write(self.val, self.instructions(dev[:n_eval], "train", opts)[0])
        self.n_train = len(train)
        print(
            f"[conll04] {len(train)} train and {len(dev)} dev sentences from {self.data}; "
            f"relations {', '.join(self.schema.roles)}",
            flush=True,
        )
        self.timings["convert"] = time.time() - t

    def instructions(self, sentences, split: str, opts):
        from kgc import spert

        return spert.to_instructions(
            TASK,
            sentences,
            self.schema,
            split=split,
            language="en",
            opts=opts,
            names=self.names,
            detokenize=True,
            default_source="conll04",
        )

    def prepare_model(self) -> None:
        from kgc.runtime.cluster import ensure_ray

        t = time.time()
        if self.args.model == "tiny":
            from kgc.modeling.tiny import build_tiny_model

            self.model = str(self.out / "model")
            if not (Path(self.model) / "config.json").exists():
                build_tiny_model(self.model, "qwen2", "demo")
        else:
            from kgc.modeling.prepare import DEFAULT_MODEL, prepare

            self.model = str(prepare(DEFAULT_MODEL))
        self.prep_s = time.time() - t
        ensure_ray()

    def score(self, engine, name: str, records: list[dict]) -> dict:
        print(f"[conll04] {name}: {len(records)} dev sentences", flush=True)
        t = time.time()
        outputs = answers(engine, records, self.preset)
        report = strict_scores(records, outputs)
        _write(
            self.out / f"dev.{name.replace(' ', '-')}.jsonl",
            [{**r, "output": o} for r, o in zip(records, outputs)],
        )
        report["sentences"] = len(records)
        self.rows[name] = report
        self.timings[name] = time.time() - t
        return report

    def zero_shot(self) -> None:
        from kgc.modeling.hf_engine import HFEngine

        n = self.args.zero_shot if self.args.zero_shot is not None else self.preset["zero_shot"]
        if n <= 0:
            return
        base = HFEngine(self.model, batch_size=self.preset["batch_size"])
        self.score(base, "zero-shot", self.dev[:n])

    def steps(self) -> int:
        if self.args.steps:
            return self.args.steps
        epochs = self.args.epochs or self.preset["epochs"]
        return max(1, math.ceil(epochs * self.n_train / self.preset["train"]["batch_size"]))

    def fine_tune(self) -> None:
        from kgc.runtime.train import run

        steps = self.steps()
        print(f"[conll04] LoRA fine-tuning on Ray Train: {steps} steps", flush=True)
        t = time.time()
        result = run(_train_config(self.model, self.train, self.val, self.out, self.preset, steps))
        self.ckpt = result.checkpoint.path
        self.timings["fine-tuning"] = time.time() - t
        self.n_steps = steps

    def tuned(self) -> None:
        from kgc.modeling.hf_engine import HFEngine

        self.engine = HFEngine(checkpoint=self.ckpt, batch_size=self.preset["batch_size"])
        self.score(self.engine, "tuned", self.dev)

    def test(self, path: str) -> dict | None:
        """Predictions for a SpERT test file; its strict scores when it has gold relations."""
        from kgc import spert
        from kgc.sampling import SamplingOptions

        t = time.time()
        sentences = spert.read_spert(path, self.types)
        records, _ = self.instructions(
            sentences, "test", SamplingOptions(split_num=self.preset["split_num"])
        )
        print(f"[conll04] test: {len(sentences)} sentences from {path}", flush=True)
        outputs = answers(self.engine, records, self.preset)
        pred = self.out / "test.predictions.jsonl"
        _write(pred, [{**r, "output": o} for r, o in zip(records, outputs)])
        self.timings["test"] = time.time() - t
        print(f"[conll04] wrote {pred}", flush=True)
        if not any(s.relations for s in sentences):
            return None
        report = strict_scores(records, outputs)
        (self.out / "test.scores.json").write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
        return report

    def report(self, test: dict | None) -> None:
        labels = list(self.schema.roles)
        head = f"  {'model':<54} {'sent.':>5} {'P':>6} {'R':>6} {'F1':>6}  " + " ".join(
            f"{x[:10]:>10}" for x in labels
        )
        print(f"\n[conll04] strict relation scores ({TASK}, micro; per relation F1)")
        print(head)

        def line(name: str, rep: dict) -> None:
            s = rep["scores"]["triple"]
            per = rep.get("by_label", {}).get("triple", {})
            cells = " ".join(f"{per[x]['f1']:10.3f}" if x in per else f"{'-':>10}" for x in labels)
            print(
                f"  {name:<54} {rep['sentences']:5d} {s['precision']:6.3f} "
                f"{s['recall']:6.3f} {s['f1']:6.3f}  {cells}"
            )

        for name, rep in self.rows.items():
            line(f"dev, {name}", rep)
        if test is not None:
            line("test, tuned", {**test, "sentences": test["records"]})
        for name, f1 in PUBLISHED:
            print(f"  {'test, published: ' + name:<54} {'':>5} {'':>6} {'':>6} {f1:6.3f}")
        print(
            "[conll04] times: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items())
            + f" ({self.n_steps} fine-tuning steps)"
        )
        summary = {
            "model": self.model,
            "checkpoint": self.ckpt,
            "steps": self.n_steps,
            "preset": self.preset,
            "dev": {k: v["scores"]["triple"] for k, v in self.rows.items()},
            "dev_by_relation": self.rows["tuned"].get("by_label", {}).get("triple", {}),
            "test": test["scores"]["triple"] if test else None,
            "timings": self.timings,
        }
        (self.out / "conll04.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"[conll04] report {self.out / 'conll04.json'}; checkpoint {self.ckpt}")
        print(f"dev F1 (strict): {self.rows['tuned']['scores']['triple']['f1']:.3f}")
        if test is not None:
            print(f"test F1 (strict): {test['scores']['triple']['f1']:.3f}")
        print(
            f"conll04 time: {time.time() - self.t0 - self.prep_s:.0f} s "
            "(model preparation excluded)"
        )


def _write(path: Path, rows: list[dict]) -> None:
    from kgc.io import write_jsonl_atomic

    write_jsonl_atomic(path, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="folder with the SpERT train/dev files and types file (default: %(default)s)",
    )
    ap.add_argument("--out", default="out/conll04")
    ap.add_argument("--test", metavar="FILE", help="a SpERT test file: predictions (+ scores)")
    ap.add_argument("--model", choices=tuple(PRESETS), default="smollm2")
    ap.add_argument("--epochs", type=float, help="passes over train (default: the preset's)")
    ap.add_argument("--steps", type=int, help="fine-tuning steps (instead of --epochs)")
    ap.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    ap.add_argument("--lora-r", type=int, help="LoRA rank, alpha = 2·r (default: the preset's)")
    ap.add_argument(
        "--zero-shot", type=int, help="dev sentences scored zero-shot (default: the preset's)"
    )
    ap.add_argument("--verbose", action="store_true", help="every library's warnings and logs")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        raise SystemExit(
            f"--data {args.data}: no such folder; point it at the folder holding the SpERT "
            "files (docs/conll04.md says where CoNLL04 is found)"
        )
    from kgc.logs import quiet

    quiet(args.verbose, native=argv is None)
    import torch

    torch.set_num_threads(2)  # scoring runs here, while Ray's workers are idle
    recipe = Recipe(args)
    recipe.convert()
    recipe.prepare_model()
    recipe.zero_shot()
    recipe.fine_tune()
    recipe.tuned()
    test = recipe.test(args.test) if args.test else None
    recipe.report(test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
