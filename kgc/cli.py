"""The `kgc` command line (an entry point: it may reach every layer): `kgc convert`, `eval`,
`train`, `export`, `extract`, `serve`, `review`, `tiny-model`, `model prepare|list`, and the feature
packages' own commands `graph`, `pipeline`, `icl` (added by their `add_commands`).

Exit status: 0 on success, 2 on bad input (every problem printed to stderr with file, line
and fix), 1 on an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from kgc import __version__
from kgc.errors import KgcError
from kgc.formats import CONVERT_FORMATS, EVAL_FORMATS
from kgc.tasks.registry import TASK_NAMES


def _task(value: str) -> str:
    v = value.upper()
    if v not in TASK_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown task {value!r}; choose one of {', '.join(TASK_NAMES)}"
        )
    return v


def _prob(value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return p


def _ray_job_args(p: argparse.ArgumentParser, config_help: str) -> None:
    """--config, key.sub=value overrides and --address, shared by the Ray job commands."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=2e-4")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kgc", description="Turn text into knowledge graphs with large language models."
    )
    parser.add_argument("--version", action="version", version=f"kgc {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every library's warnings and logs (default: the known-harmless ones are "
        "filtered, docs/console.md; KGC_LOG=debug does the same)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "convert",
        help="raw annotated JSONL + schema → IEPile instruction JSONL",
        description="Convert raw annotations into IEPile/OneKE instruction records.",
    )
    c.add_argument("--task", required=True, type=_task, help=", ".join(TASK_NAMES))
    c.add_argument(
        "--input",
        required=True,
        help="raw JSONL: {text, entity|relation|event} (--format spert: a SpERT JSON list)",
    )
    c.add_argument(
        "--schema",
        help="3-line schema file (required for --format iepile; --format spert: optional, "
        "else the labels come from --types)",
    )
    c.add_argument("--output", required=True, help="instruction JSONL to write")
    c.add_argument("--split", choices=("train", "test"), default="train")
    c.add_argument("--language", choices=("zh", "en"), default="zh")
    c.add_argument(
        "--split-num",
        type=int,
        default=4,
        help="max schema labels per instruction; -1 = no split (default 4; IEPile "
        "recommends NER 6, RE/EE/EET/EEA 4, KG 1)",
    )
    c.add_argument(
        "--neg-prob",
        type=_prob,
        default=1.0,
        help="probability with which each negative label is sampled (train; "
        "default 1 = all negatives)",
    )
    c.add_argument(
        "--random-order",
        action="store_true",
        help="shuffle the schema order with --seed (default: sorted)",
    )
    c.add_argument("--seed", type=int, default=42)
    c.add_argument(
        "--hard-negatives",
        metavar="FILE",
        help='cluster mode: JSON {"label": ["hard negative", ...]}',
    )
    c.add_argument(
        "--schema-info",
        metavar="FILE",
        help='OneKE\'s described / example instructions: JSON {"descriptions": {label: '
        'text, or {"description": text, "roles": {role: text}}}, "examples": '
        '[{"input": text, "output": {...}}]} (docs/deepke.md)',
    )
    c.add_argument(
        "--source",
        help="value of the `source` field (default: the record's own "
        "`source`, else the input's folder name)",
    )
    c.add_argument(
        "--format",
        choices=tuple(CONVERT_FORMATS),
        default="iepile",
        help="; ".join(f"{name} = {what}" for name, what in CONVERT_FORMATS.items()),
    )
    c.add_argument(
        "--types",
        metavar="FILE",
        help="--format spert (required): SpERT's types file {entities: {...}, relations: {...}}",
    )
    c.add_argument(
        "--names",
        metavar="FILE|verbose",
        help="--format spert: display names of the types, a JSON file {type: name} (types it "
        "leaves out keep theirs) or `verbose` = the types file's verbose names (default: the "
        "names as they are)",
    )
    c.add_argument(
        "--detokenize",
        action="store_true",
        help='--format spert: join tokens as natural text (" ," → ","; gold strings follow); '
        "default: tokens joined by spaces",
    )
    c.add_argument(
        "--ccks-sample",
        metavar="N",
        help="--format ccks2023 only (DeepKE kg2instruction --sample): 0-3 = DeepKE's "
        "instruction template N with output format N; -1 = a random template 0-19 and format "
        "0-3 per record (seeded by --seed). Default: kgc's own instruction, format 0",
    )
    c.add_argument(
        "--neg-ratio",
        metavar="SHARE",
        help="--format ccks2023 only (DeepKE --neg_ratio, 0-1): share of train records given "
        "negative labels (relations, types; EE/EEA also roles), each answered by NAN; each "
        "record then lists only its own and its sampled labels (on --split test, >0 adds a NAN "
        "per absent schema label). Default: no NAN lines, the whole schema listed; 1 when "
        "--neg-schema is given",
    )
    c.add_argument(
        "--neg-schema",
        metavar="SHARE",
        help="--format ccks2023 only (DeepKE --neg_schema, >0-1, default 1): share of the "
        "schema labels drawn per record as candidate negatives; --random-order = DeepKE's "
        "--random_sort",
    )
    c.add_argument(
        "--ccks-templates",
        metavar="FILE",
        help="--format ccks2023, NER/EE/EET/EEA: DeepKE's configs/<task>_template.json, whose 20 "
        "'template' instructions per language replace kgc's copies (kgc bundles all 20 for NER, "
        "RE and EEA but only template 0 for EE and EET, so their --ccks-sample 1-3 and -1 need it)",
    )

    e = sub.add_parser(
        "eval",
        help="score model outputs on test records",
        description="Score model outputs (field `output`) against test records' labels.",
    )
    e.add_argument("--config", help="YAML with these options instead (jobs/configs/eval_*.yaml)")
    e.add_argument("--task", type=_task, help=", ".join(TASK_NAMES))
    e.add_argument("--input", help="test records with the model's `output`")
    e.add_argument("--report", help="also write the report as JSON to this file")
    e.add_argument("overrides", nargs="*", help="with --config: key=value overrides")
    e.add_argument(
        "--by",
        choices=("source", "label"),
        help="also print scores per source, or per label (relation, entity type)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--match", choices=("multiset", "set"), help="default multiset")
    e.add_argument(
        "--strict",
        action="store_true",
        help="the papers' strict F1 (SpERT, CoNLL04 tables): exact strings and set matching "
        "per record (= --no-normalize --match set); printed as `strict relation F1 (micro)`",
    )
    e.add_argument(
        "--no-normalize",
        action="store_true",
        help="exact string matching (default: NFKC, case and whitespace folded)",
    )
    e.add_argument(
        "--rouge",
        action="store_true",
        help="also ROUGE-1/2/L of each output against the gold target text",
    )
    e.add_argument("--language", choices=("zh", "en"), help="ROUGE tokenisation (default: auto)")
    e.add_argument(
        "--segmenter",
        choices=("char", "jieba"),
        default="char",
        help="Chinese ROUGE tokens: characters or jieba words",
    )
    e.add_argument("--format", choices=EVAL_FORMATS, default="iepile")

    t = sub.add_parser(
        "train",
        help="fine-tune a causal LM on Ray Train (LoRA, QLoRA, P-Tuning, full, freeze)",
        description="Fine-tune with Ray Train; re-running the same run.name resumes it.",
    )
    _ray_job_args(t, "YAML config (see jobs/configs/)")
    t.add_argument("--check", action="store_true", help="validate the config and exit")

    x = sub.add_parser("export", help="merge a LoRA checkpoint into its base → a plain HF model")
    x.add_argument("--checkpoint", required=True, help="kgc checkpoint or peft adapter directory")
    x.add_argument("--out", required=True, help="directory to write the merged model to")
    x.add_argument("--base", help="base model directory (default: the one training used)")
    x.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    x.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the base model's own Python code (only for models you trust)",
    )

    ex = sub.add_parser(
        "extract",
        help="batch extraction over a corpus on Ray Data (resumable)",
        description="Extract with an engine on a Ray Data actor pool; rerun to resume.",
    )
    _ray_job_args(ex, "YAML extraction config (see jobs/configs/extract_*.yaml)")
    ex.add_argument("--quiet", action="store_true", help="no progress lines")
    ex.add_argument(
        "--fresh",
        action="store_true",
        help="clear the output folder's old results (rows, merge, scores, summary) first "
        "instead of resuming from them",
    )

    sv = sub.add_parser("serve", help="run the Ray Serve app (task API + OpenAI-compatible API)")
    sv.add_argument("--config", required=True, help="a Serve config (see serve/config.yaml)")

    rv = sub.add_parser(
        "review",
        help="review an extraction in the browser: accept, fix, add facts (docs/review.md)",
    )
    rv.add_argument("dir", help="a `kgc extract` output folder")
    rv.add_argument(
        "--corrections",
        help="the corrections file (DeepKE raw RE JSONL; default DIR/corrections.jsonl)",
    )
    rv.add_argument("--schema", help="an IEPile schema file: its relations (default: the rows')")
    rv.add_argument("--host", default="127.0.0.1", help="beyond 127.0.0.1 only with API keys")
    rv.add_argument("--port", type=int, default=8765)
    rv.add_argument(
        "--api-keys-env",
        default="KGC_API_KEYS",
        help="environment variable with comma-separated API keys; set: the API asks for one",
    )

    m = sub.add_parser("tiny-model", help="build a tiny random model + tokenizer (no download)")
    m.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
    m.add_argument("--size", choices=("tiny", "demo", "small"), default="tiny")
    m.add_argument("--out", required=True)

    mo = sub.add_parser("model", help="prepare real models (GGUF → Hugging Face folder), list them")
    mo_sub = mo.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mp = mo_sub.add_parser(
        "prepare",
        help="a known model (smollm2-135m-instruct) or a .gguf file → a HF folder in the cache",
    )
    mp.add_argument("model", help="smollm2-135m-instruct, or a path to a .gguf file")
    mp.add_argument("--out", help="folder to write (default: $KGC_HOME/models/<name>)")
    mp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ml = mo_sub.add_parser("list", help="the prepared models")
    ml.add_argument("--json", action="store_true", help="one JSON object per line")
    for module in _plugin_modules():
        module.add_commands(sub, RAY_HANDLERS)
    return parser


def _cmd_graph_build(args) -> int:
    from kgc.graph.cli import build
    from kgc.runtime.graph import map_reduce

    return build(args, map_reduce)


def _cmd_pipeline(args) -> int:
    from kgc.graph.cli import pipeline
    from kgc.runtime.graph import run_pipeline

    return pipeline(args, run_pipeline)


def _cmd_icl(args) -> int:
    from kgc.icl.cli import run_command
    from kgc.runtime.icl import execute_ray

    return run_command(args, execute_ray)


# Feature packages that bring their own subcommands: each module defines
# `add_commands(sub, ray_handlers)`, which adds parsers whose defaults include
# `handler=<callable(args)>`. Their import must stay light (no torch/ray): handlers import
# heavy things when called. The packages are core and never import kgc.runtime, so the
# handlers of their commands that may run on Ray are these, which hand them the Ray steps.
PLUGINS = ("kgc.graph.cli", "kgc.icl.cli")
RAY_HANDLERS = {
    "graph build": _cmd_graph_build,
    "pipeline": _cmd_pipeline,
    "icl": _cmd_icl,
}


def _plugin_modules():
    import importlib

    for name in PLUGINS:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise


def _cmd_convert(args) -> int:
    from kgc import convert, legacy, legacy_tasks
    from kgc.io import read_jsonl, write_jsonl_atomic
    from kgc.sampling import SamplingOptions

    ccks_flags = [
        f"{flag} {value}"
        for flag, value in (
            ("--ccks-sample", args.ccks_sample),
            ("--neg-ratio", args.neg_ratio),
            ("--neg-schema", args.neg_schema),
            ("--ccks-templates", args.ccks_templates),
        )
        if value is not None
    ]
    if ccks_flags and args.format != "ccks2023":
        raise KgcError(
            f"{', '.join(ccks_flags)}: only for --format ccks2023; add --format ccks2023 or "
            "drop them (IEPile negatives: --neg-prob)"
        )
    spert_flags = [
        flag
        for flag, value in (
            ("--types", args.types),
            ("--names", args.names),
            ("--detokenize", args.detokenize or None),
        )
        if value is not None
    ]
    if spert_flags and args.format != "spert":
        raise KgcError(
            f"{', '.join(spert_flags)}: only for --format spert; add --format spert or drop them"
        )
    if args.format == "ccks2023":
        tasks = (*legacy.TASKS, *legacy_tasks.TASKS)
        if args.task not in tasks:
            raise KgcError(
                f"--format ccks2023 supports --task {', '.join(tasks)}, got {args.task}; "
                "use --format iepile for it"
            )
        if args.task in legacy.TASKS and args.ccks_templates:
            raise KgcError(
                f"--ccks-templates {args.ccks_templates}: not for --task RE (kgc bundles DeepKE's "
                "20 RE templates); drop it"
            )
        options = legacy.ccks_options(
            args.ccks_sample,
            args.neg_ratio,
            args.neg_schema,
            random_sort=args.random_order,
            seed=args.seed,
        )
        problems = []
        if args.task in legacy.TASKS:
            relations = legacy.relations_from_schema(args.schema) if args.schema else None
            rows = list(read_jsonl(args.input, problems))
            out, more = legacy.convert_rows(
                rows,
                split=args.split,
                language=args.language,
                relations=relations,
                path=args.input,
                options=options,
            )
        else:
            from kgc.schema import read_schema

            templates = (
                legacy_tasks.load_templates(args.ccks_templates, args.task)
                if args.ccks_templates
                else None
            )
            legacy_tasks.check_sample(args.task, options, templates)
            schema = read_schema(args.schema) if args.schema else None
            rows = list(read_jsonl(args.input, problems))
            out, more = legacy_tasks.convert_rows(
                args.task,
                rows,
                split=args.split,
                language=args.language,
                schema=schema,
                path=args.input,
                options=options,
                templates=templates,
            )
        problems += more
        if problems:
            raise KgcError(problems + [f"nothing written to {args.output}"])
        n = write_jsonl_atomic(args.output, out)
        print(
            f"kgc convert: {len(rows)} input records → {n} records in {args.output}",
            file=sys.stderr,
        )
        return 0
    opts = SamplingOptions(
        split_num=args.split_num,
        neg_prob=args.neg_prob,
        random_order=args.random_order,
        seed=args.seed,
    )
    if args.format == "spert":
        return _convert_spert(args, opts)
    if not args.schema:
        raise KgcError("--schema is required: the 3-line schema file of your labels")
    stats = convert.convert_file(
        args.task,
        args.input,
        args.schema,
        args.output,
        split=args.split,
        language=args.language,
        opts=opts,
        source=args.source,
        hard_negatives=args.hard_negatives,
        schema_info=args.schema_info,
    )
    print(f"kgc convert: {stats.summary()}; wrote {args.output}", file=sys.stderr)
    return 0


def _convert_spert(args, opts) -> int:
    from kgc import spert

    spert.check_task(args.task)
    unused = [
        f"{flag} {value}"
        for flag, value in (
            ("--hard-negatives", args.hard_negatives),
            ("--schema-info", args.schema_info),
        )
        if value is not None
    ]
    if unused:
        raise KgcError(
            f"{', '.join(unused)}: not for --format spert; convert to DeepKE's raw JSONL first "
            "(kgc.spert.to_raw) and use --format iepile, or drop them"
        )
    if not args.types:
        raise KgcError(
            "--format spert needs --types FILE: the SpERT types file of the dataset (e.g. "
            "conll04_types.json)"
        )
    stats = spert.convert_spert(
        args.task,
        args.input,
        args.types,
        args.output,
        names=args.names,
        detokenize=args.detokenize,
        schema_path=args.schema,
        split=args.split,
        language=args.language,
        opts=opts,
        source=args.source,
    )
    print(f"kgc convert: {stats.summary()}; wrote {args.output}", file=sys.stderr)
    return 0


def _eval_config(args):
    """The eval options from --config (plus key=value overrides) or from the flags."""
    from kgc.config import EvalConfig, load_config

    if args.config:
        return load_config(args.config, args.overrides, schema=EvalConfig)
    missing = [f"--{k}" for k in ("task", "input") if not getattr(args, k)]
    if missing:
        raise KgcError(f"kgc eval needs {' and '.join(missing)} (or --config FILE)")
    if args.strict and args.match == "multiset":
        raise KgcError(
            "--strict matches each record's items as sets (the papers' scoring); drop "
            "--match multiset, or drop --strict"
        )
    return EvalConfig(
        task=args.task,
        input=args.input,
        format=args.format,
        by_source=args.by == "source",
        by_label=args.by == "label",
        match=args.match or "multiset",
        normalize=not args.no_normalize,
        strict=args.strict,
        rouge=args.rouge,
        language=args.language,
        segmenter=args.segmenter,
        report=args.report,
    )


def _cmd_eval(args) -> int:
    from functools import partial

    from kgc import evaluate, legacy, legacy_tasks
    from kgc.io import read_jsonl

    cfg = _eval_config(args)
    opts = evaluate.EvalOptions(
        match=cfg.match,
        normalize=cfg.normalize,
        rouge=cfg.rouge,
        language=cfg.language,
        segmenter=cfg.segmenter,
        strict=cfg.strict,
    )
    if cfg.format == "ccks2023":
        tasks = (*legacy.TASKS, *legacy_tasks.TASKS)
        if cfg.task not in tasks:
            raise KgcError(
                f"--format ccks2023 scores --task {', '.join(tasks)}, got {cfg.task}; use "
                "--format iepile for it"
            )
        if cfg.by_label:
            raise KgcError("--by label: per-label scores are for --format iepile; drop it")
        problems = []
        rows = list(read_jsonl(cfg.input, problems))
        if problems:
            raise KgcError(problems)
        score = (
            legacy.evaluate_rows
            if cfg.task in legacy.TASKS
            else partial(legacy_tasks.evaluate_rows, cfg.task)
        )
        report = score(
            rows,
            path=cfg.input,
            language=cfg.language,
            segmenter=cfg.segmenter,
            match=opts.match,
            normalize=opts.normalize,
        )
        report["strict"] = opts.strict
    else:
        report = evaluate.evaluate_file(cfg.task, cfg.input, opts)
    if cfg.report:
        from kgc.io import write_text_atomic

        write_text_atomic(cfg.report, json.dumps(report, ensure_ascii=False, indent=2))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(evaluate.format_table(report, by_source=cfg.by_source, by_label=cfg.by_label))
    return 0


def _cmd_train(args) -> int:
    from kgc.config import load_config
    from kgc.modeling.training import validate
    from kgc.runtime.train import run

    cfg = load_config(args.config, args.overrides)
    if args.check:
        lengths: list[str] = []
        problems = validate(cfg, report=lengths)
        for line in lengths:
            print(f"kgc train --check: {line}", file=sys.stderr)
        if problems:
            raise KgcError(problems)
        print(f"kgc train: {args.config} is valid", file=sys.stderr)
        return 0
    result = run(cfg, ray_address=args.address)
    ckpt = result.checkpoint.path if result.checkpoint else None
    print(json.dumps({"metrics": result.metrics, "checkpoint": ckpt}, ensure_ascii=False))
    return 0


def _cmd_extract(args) -> int:
    from kgc.config import ExtractConfig, load_config
    from kgc.runtime.extract import run_extract

    cfg = load_config(args.config, args.overrides, schema=ExtractConfig)
    if args.address:
        from kgc.runtime.cluster import ensure_ray

        ensure_ray(args.address)
    summary = run_extract(cfg, progress=not args.quiet, fresh=args.fresh)
    scores = summary.pop("scores", None)
    print(json.dumps(summary, ensure_ascii=False))
    if scores is not None:
        from kgc.evaluate import format_table

        print(format_table(scores, by_source=True))
    if not args.quiet:
        extract_block(summary, scores)
    return 0


def extract_block(summary: dict, scores: dict | None) -> str:
    """`kgc extract`'s closing lines (stderr): counts, outputs, scores, where the details are."""
    from pathlib import Path

    from kgc.extract import DOCUMENTS, SCORES, SUMMARY
    from kgc.progress import clock, done_block

    out = Path(summary["output"])
    rows, errors = summary["rows"], round(summary["parse_error_rate"] * summary["rows"])
    resumed = summary.get("rows_skipped_resume") or 0
    aside = {
        k: summary.get(k)
        for k in ("shards_corrupt", "rows_duplicate", "rows_not_in_input", "rows_changed")
    }
    score = None
    if scores is not None:
        s = next(iter(scores["scores"].values()), None)
        if s is not None:
            score = (
                f"P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}  ({out / SCORES})"
            )
    return done_block(
        f"kgc extract: done in {clock(summary['seconds'])}, {summary['rows_per_s']:.2f} rows/s",
        [
            (
                "rows",
                f"{rows} from {summary['documents']} documents"
                + (f" ({resumed} done by an earlier run)" if resumed else ""),
            ),
            ("records", summary["records"]),
            ("parse errors", f"{errors} rows ({100 * summary['parse_error_rate']:.1f} %)"),
            ("set aside", ", ".join(f"{k} {v}" for k, v in aside.items() if v) or None),
            ("documents", out / DOCUMENTS),
            ("predictions", summary.get("predictions")),
            ("scores", score),
            ("details", out / SUMMARY),
        ],
    )


def _cmd_serve(args) -> int:
    import os
    import subprocess
    from pathlib import Path

    # Ray's `serve run` (next to this Python) runs the app from the Serve config
    # (import_path serve.app:build_app); it blocks until interrupted. `serve/` is not an
    # installed package: run from the checkout that holds it (here, the config's, or kgc's).
    serve_bin = os.path.join(os.path.dirname(sys.executable), "serve")
    config = Path(args.config).resolve()
    roots = (Path.cwd(), config.parent.parent, Path(__file__).resolve().parent.parent)
    root = next((d for d in roots if (d / "serve" / "app.py").is_file()), Path.cwd())
    return subprocess.call([serve_bin, "run", str(config)], cwd=root)


def _cmd_review(args) -> int:
    from pathlib import Path

    from kgc.review_app import run

    corrections = args.corrections or str(Path(args.dir) / "corrections.jsonl")
    run(args.dir, corrections, args.schema, args.host, args.port, args.api_keys_env)
    return 0


def _cmd_export(args) -> int:
    from kgc.modeling.export import export_model

    out = export_model(
        args.checkpoint,
        args.out,
        base=args.base,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    print(f"kgc export: wrote {out}", file=sys.stderr)
    return 0


def _cmd_tiny(args) -> int:
    from kgc.modeling.tiny import build_tiny_model

    print(build_tiny_model(args.out, args.arch, args.size))
    return 0


def _cmd_model(args) -> int:
    from kgc.modeling import prepare

    if args.model_command == "prepare":
        print(prepare.prepare(args.model, args.out, args.dtype))
        return 0
    rows = prepare.list_models()
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    if not rows:
        print(
            f"no prepared models in {prepare.models_home()} (kgc model prepare {prepare.DEFAULT_MODEL})"
        )
        return 0
    print(f"{'name':<28} {'parameters':>12} {'dtype':<6} {'path':<50} source")
    for r in rows:
        n = r["parameters"]
        size = f"{n / 1e6:.1f}M" if isinstance(n, int) else "?"
        print(f"{r['name']:<28} {size:>12} {r['dtype']!s:<6} {r['path']:<50} {r['source']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kgc.logs import quiet

    quiet(args.verbose, native=argv is None)  # argv given: called from Python (tests)
    handlers = {
        "convert": _cmd_convert,
        "eval": _cmd_eval,
        "train": _cmd_train,
        "export": _cmd_export,
        "tiny-model": _cmd_tiny,
        "extract": _cmd_extract,
        "serve": _cmd_serve,
        "review": _cmd_review,
        "model": _cmd_model,
    }
    handler = getattr(args, "handler", None) or handlers[args.command]
    try:
        return handler(args)
    except KgcError as exc:
        from kgc.runtime.pool import Stalled, quiet_abandoned_pipeline

        if isinstance(exc, Stalled):  # the command ends with this error (jobs/ exit with
            quiet_abandoned_pipeline()  # it too): the abandoned pipeline prints nothing after
        print(f"kgc {args.command}: error:\n{exc.render()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
