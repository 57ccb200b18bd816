"""`kgc icl --config …`: in-context extraction through an OpenAI-compatible API.

Light on import (argparse only); the handler imports what it needs. The handler comes from
the entry point (`kgc.cli`), which passes `run_command` the Ray back end: kgc.icl never
imports Ray.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable


def add_commands(sub, ray_handlers: dict[str, Callable]) -> None:
    """The `icl` command; its handler is `ray_handlers["icl"]` (it may run on Ray)."""
    p = sub.add_parser(
        "icl",
        help="in-context extraction through an OpenAI-compatible API (LLMICL, augment, "
        "few-shot RE, CodeKGC)",
        description="Run an in-context mode over a file (or one --text) against any "
        "OpenAI-compatible endpoint; the API key is read from client.api_key_env.",
    )
    p.add_argument("--config", required=True, help="YAML config (see jobs/configs/icl_*.yaml)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. client.model=gpt-4o")
    p.add_argument("--address", help="Ray cluster address (runner.backend=ray; default: local)")
    p.add_argument("--text", help="one text instead of the input file (augment: a relation)")
    p.add_argument("--head", help="RE / few-shot RE with --text: the head entity")
    p.add_argument("--tail", help="RE / few-shot RE with --text: the tail entity")
    p.add_argument("--head-type", default="", help="type of --head")
    p.add_argument("--tail-type", default="", help="type of --tail")
    p.add_argument("--relation", help="augment: the relation to generate samples for")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=ray_handlers["icl"])


def single_item(cfg, args) -> dict | None:
    from kgc.errors import KgcError

    if args.relation or (args.text is not None and cfg.mode == "augment"):
        if cfg.mode != "augment":
            raise KgcError("--relation is for mode augment only")
        return {"relation": args.relation or args.text}
    if args.text is None:
        if args.head or args.tail:
            raise KgcError("--head/--tail go with --text")
        return None
    if not args.text.strip():
        raise KgcError("--text is empty")
    if cfg.mode == "llmicl":
        if cfg.llmicl.task == "ccks2023":
            return {"input": args.text}
        item = {"text": args.text}
        for key, val in (
            ("head_entity", args.head),
            ("tail_entity", args.tail),
            ("head_type", args.head_type),
            ("tail_type", args.tail_type),
        ):
            if val:
                item[key] = val
        return item
    if cfg.mode == "fewshot_re":
        if not args.head or not args.tail:
            raise KgcError("mode fewshot_re with --text needs --head and --tail")
        from kgc.icl.fewshot_re import instance_from_text

        return instance_from_text(args.text, args.head, args.tail, args.head_type, args.tail_type)
    return {"text": args.text}


def run_command(args, ray_execute: Callable) -> int:
    """`kgc icl`; `ray_execute` (kgc.runtime.icl.execute_ray) sends the requests on Ray."""
    from kgc.icl.config import load_icl_config
    from kgc.icl.runner import run_icl

    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"runner.address={args.address}")
    cfg = load_icl_config(args.config, overrides)
    single = single_item(cfg, args)
    result = run_icl(cfg, single=single, progress=not args.quiet, ray_execute=ray_execute)
    if single is not None:
        for row in result.rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    summary = dict(result.summary)
    report = summary.pop("report", None)
    print(json.dumps(summary, ensure_ascii=False))
    if report:
        print(report)
    if not cfg.output:
        print(
            "kgc icl: no output folder set (output=...); predictions were not written",
            file=sys.stderr,
        )
    elif not args.quiet:
        icl_block(result.summary)
    return 0


def icl_block(summary: dict) -> str:
    """`kgc icl`'s closing lines (stderr): requests, failures, files."""
    from kgc.progress import clock, done_block

    files = summary.get("files", {})
    failed = summary.get("failed_requests", 0)
    return done_block(
        f"kgc icl ({summary.get('mode')}): done in {clock(summary.get('seconds', 0))}",
        [
            (
                "requests",
                f"{summary.get('requests')} ({summary.get('cache_hits', 0)} from the "
                f"cache, {summary.get('retries', 0)} retries)",
            ),
            ("failed", f"{failed} (kept as rows with their error)" if failed else None),
            ("model", f"{summary.get('model')} at {summary.get('base_url')}"),
            *((name, path) for name, path in files.items()),
        ],
    )
