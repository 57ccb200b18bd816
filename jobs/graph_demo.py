"""The knowledge-graph pipeline end to end on the bundled demo corpus, without a GPU model.

    python -m jobs.graph_demo [--out out/graph-demo]     # oracle + `kgc pipeline`, counts
    python -m jobs.graph_demo serve [--port 18765]       # only the oracle server

Not for `ray job submit` to a cluster: the oracle listens on 127.0.0.1 of the driver, so only
actors on the driver's machine reach it.

A model that knows nothing (the tiny random ones) extracts nothing, so the demo answers
the extraction prompts with an *annotation replay* server: an OpenAI-compatible endpoint on
127.0.0.1 that reads each prompt (the IEPile instruction JSON: instruction, schema, input),
finds the corpus documents whose text contains the prompt's input chunk, and answers the
gold target for the asked schema split — what a perfect fine-tuned model would answer
(`Task.target`), restricted to the annotations whose strings occur in the chunk. The real
`kgc extract` job (chunking, Ray Data actors, the OpenAI engine, parsing, shards) and the
real graph build run on those answers. Point `extract.engine` at a served model (`kgc
serve`, vLLM) to run the same pipeline for real.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus" / "demo.jsonl"
CONFIG = ROOT / "jobs" / "configs" / "pipeline_demo.yaml"
FIELDS = {"NER": "entity", "RE": "relation", "SPO": "relation", "KG": "relation"}


def _field(task: str) -> str:
    return FIELDS.get(task, "event")


class Oracle:
    """Gold answers for instruction prompts over an annotated corpus."""

    def __init__(self, corpus: str | Path = CORPUS):
        from kgc.io import read_jsonl

        self.docs = [rec for _, rec in read_jsonl(corpus)]
        from kgc.instructions import INSTRUCTIONS

        self.by_text: dict[str, set[str]] = {}
        for (task, _lang), text in INSTRUCTIONS.items():
            self.by_text.setdefault(text, set()).add(task)

    def task_of(self, inst: dict) -> str:
        tasks = self.by_text.get(inst.get("instruction", ""), set())
        if tasks == {"RE", "SPO"}:
            schema = inst.get("schema") or []
            return "SPO" if schema and isinstance(schema[0], dict) else "RE"
        if len(tasks) != 1:
            raise ValueError("not a kgc instruction prompt")
        return next(iter(tasks))

    def answer(self, prompt: str) -> str:
        from kgc.tasks import get

        inst = json.loads(prompt)
        task = get(self.task_of(inst))
        text, chunk = inst.get("input", ""), inst.get("schema") or []
        anns = []
        for d in self.docs:
            if text and text in d["text"]:
                anns += [a for a in d.get(_field(task.name), []) if _inside(a, text)]
        return json.dumps(task.target(_clip(anns, text), chunk, text), ensure_ascii=False)


def _inside(ann: dict, text: str) -> bool:
    for k in ("entity", "head", "tail", "event_trigger"):
        if k in ann and ann[k] not in text:
            return False
    return True


def _clip(anns: list[dict], text: str) -> list[dict]:
    """Event arguments outside the chunk are not in the answer (the model cannot see them)."""
    out = []
    for a in anns:
        if "arguments" in a:
            a = {**a, "arguments": [x for x in a["arguments"] if x["argument"] in text]}
        out.append(a)
    return out


def serve(oracle: Oracle, port: int = 0) -> ThreadingHTTPServer:
    """Start the OpenAI-compatible oracle on 127.0.0.1 in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompt = body["messages"][-1]["content"]
                text = oracle.answer(prompt)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            payload = {
                "object": "chat.completion",
                "model": body.get("model", "kgc-demo-oracle"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
            self._send(200, payload)

        def do_GET(self):  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": "kgc-demo-oracle"}]})

        def _send(self, code: int, obj: dict):
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def run_demo(out: str, overrides: list[str] | None = None, progress: bool = True) -> dict:
    from kgc.config import load_config
    from kgc.graph.config import PipelineConfig
    from kgc.runtime.graph import run_pipeline

    srv = serve(Oracle())
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        cfg = load_config(
            CONFIG,
            [
                f"extract.input.path={CORPUS}",
                f"extract.schema={CORPUS.parent / 'schema.json'}",
                f"extract.engine.base_url={base}",
                f"extract.output.path={out}",
                f"graph.canonical.alias_file={CORPUS.parent / 'aliases.tsv'}",
                *(overrides or []),
            ],
            schema=PipelineConfig,
        )
        return run_pipeline(cfg, progress=progress)
    finally:
        srv.shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=("run", "serve"), default="run")
    ap.add_argument("--out", default="out/graph-demo")
    ap.add_argument("--port", type=int, default=18765, help="serve: the port to listen on")
    ap.add_argument("overrides", nargs="*", help="pipeline key.sub=value overrides")
    args = ap.parse_args(argv)
    if args.mode == "serve":
        srv = serve(Oracle(), args.port)
        print(f"demo oracle on http://127.0.0.1:{srv.server_address[1]}/v1 (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            srv.shutdown()
        return 0
    s = run_demo(args.out, args.overrides)
    g = s["graph"]
    counts = {
        "documents": next(iter(s["extract"].values()))["documents"],
        "rows": {t: x["rows"] for t, x in s["extract"].items()},
        "records": {t: x["records"] for t, x in s["extract"].items()},
        **{k: g[k] for k in ("nodes", "edges", "node_mentions", "edge_mentions")},
        "nodes_by_kind": g["nodes_by_kind"],
        "edges_by_kind": g["edges_by_kind"],
        "dropped": g["dropped"],
        "outputs": g["output"],
        "seconds": s["seconds"],
    }
    print(json.dumps(counts, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
