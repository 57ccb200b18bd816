"""Load on the Serve app, over real HTTP on 127.0.0.1, in one run:

1. 1,000 chat-completion requests from 32 concurrent clients, 5 % malformed (bad JSON,
   missing `messages`, unknown model): statuses, zero 5xx for valid requests, a 4xx with a
   message for every malformed one, p50/p99 latency, throughput;
2. batched (`@serve.batch`, batch 16) vs unbatched (batch 1) throughput at 16 clients;
3. overload: a deployment with 2 ongoing + 2 queued requests under 64 clients answers
   503/429 for the excess instead of failing.

`--hostile`: only a mixed load where 10 % of requests are the hostile kinds of issue 13
(S1–S6: an invalid or uncompilable response schema, a lone surrogate, malformed fields, a
schema beyond the size limit, JSON nested 10,000 deep, an extract needing 3,200 model calls,
a 2 MB chunked body) and issue 26 (an extract with 200 labels of ≈ 60 words, a chat of
8,000 rare CJK characters: prompts far beyond the model's context) and 5 % carry a valid
response schema never seen before (grammar-cache churn): valid requests' statuses (target:
0 × 5xx), every hostile kind's statuses (target: 4xx) and the model replica's memory before,
at its peak and after.

`--engines`: the Serve head to head (issue 29), one server at a time on 127.0.0.1, the same
model (fp32), the same clients (the same async client code, requests in the same order at the
same concurrency), greedy (temperature 0), the same max_tokens (the constrained pass's own,
208 by default: room for every answer to close on its own; a shorter budget is met by kgc's
engine closing the answer and by vLLM cutting it, so the answers differ by design):

  (A) kgc Serve on its own engine (`serve.app:build_app`, engine: hf);
  (B) kgc Serve on vLLM (engine: vllm, replica_gpus: 0: vLLM's CPU build);
  (C) vLLM's own OpenAI-compatible server (`vllm.entrypoints.openai.api_server`, a
      subprocess of this Python, stopped by its process group at the end, also on error);
  (P) the reference: plain batched HF `generate` in-process on the same prompts
      (bench/extract_throughput.py's baseline (b)).

Prompts: the demo's IEPile SPO test instructions (bench/extract_throughput.py `records`), one
user turn each, first a free chat pass, then a constrained one (`response_format`
json_schema: each instruction's SPO answer schema, bounded and grounded as in `make demo`;
kgc Serve's limits.max_schema_bytes is raised to the largest). A few more instructions warm
each server up first (free and constrained, not timed). Per server and pass: requests/s,
completion tokens/s (each server's `usage`), p50/p99 latency, statuses (all 200 expected),
the share of answers identical to (P), answers cut at max_tokens, and (constrained) the share
that parse as JSON and fit their schema and the share whose JSON value equals (P)'s (vLLM's
server formats JSON its own way: `{"a":[` where kgc's grammar lets the model write
`{"a": [`); then `A/C`, `B/C`, `A/B` (requests/s; goal A/C ≥ 1.0
with ≥ 99 % identical to (P)), and a warning where `usage.prompt_tokens` differ between
servers for the same request (the chat template applied otherwise). Needs vLLM (.venv-vllm:
make venv-vllm); `--vllm-eager` skips vLLM's compile at start (B and C alike).

  python bench/serve_load.py [--requests 1000] [--model tiny|small|smollm2]
  python bench/serve_load.py --model smollm2 --requests 160 --phase-requests 64
  python bench/serve_load.py --hostile [--requests 1000]
  VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python bench/serve_load.py --engines [--model smollm2] \
      [--requests 48] [--clients 8] [--max-tokens 64] [--vllm-eager]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _models import add_model_arg, bench_model

# serve/ runs from the checkout (it is not an installed package): import serve.app from here
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOSTILE = (
    "bad_schema",
    "bad_pattern",
    "surrogate",
    "bad_fields",
    "big_schema",
    "deep",
    "extract_calls",
    "chunked_big",
    "long_labels",
    "long_cjk",
)
# issue 26: ≈ 60 words per label; characters of CJK Extension B (four UTF-8 bytes, several
# tokens each)
LONG_LABEL = " ".join(f"word{k}" for k in range(60))
RARE_CJK = "".join(chr(0x20000 + k) for k in range(8000))


def hostile_request(kind: str, i: int, rng: random.Random) -> tuple[str, object]:
    """(path, body) of one hostile request; bytes bodies are sent as they are, a generator
    goes out chunked (no Content-Length)."""
    msg = [{"role": "user", "content": f"请抽取实体：样例文本{i}"}]

    def fmt(schema):
        return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    chat = "/v1/chat/completions"
    if kind == "bad_schema":
        body = {
            "messages": msg,
            "response_format": fmt({"type": "object", "properties": {"a": {"type": "?"}}}),
        }
    elif kind == "bad_pattern":
        body = {"messages": msg, "response_format": fmt({"type": "string", "pattern": "("})}
    elif kind == "surrogate":
        return chat, b'{"messages": [{"role": "user", "content": "x\\ud800"}]}'
    elif kind == "bad_fields":
        body = rng.choice(
            [
                {"messages": []},
                {"messages": [1]},
                {"messages": msg, "max_tokens": "abc"},
                {"messages": msg, "max_tokens": -5},
                {"messages": msg, "temperature": float("nan")},
                {"messages": msg, "n": 1000},
                {"messages": msg, "stop": 5},
                {"messages": msg, "model": 123},
            ]
        )
    elif kind == "big_schema":
        props = {f"k{j}": {"type": "string"} for j in range(3000)}
        body = {"messages": msg, "response_format": fmt({"type": "object", "properties": props})}
    elif kind == "deep":
        return chat, b"[" * 10_000 + b"]" * 10_000
    elif kind == "extract_calls":
        labels = [f"类型{j}" for j in range(200)]
        return "/v1/extract", json.dumps(
            {"task": "NER", "schema": labels, "texts": ["张三。"] * 64}, ensure_ascii=False
        ).encode()
    elif kind == "long_labels":  # ≈ 80 KB, under the byte limit; one prompt of every label
        labels = [f"{LONG_LABEL} {j}" for j in range(200)]
        return "/v1/extract", json.dumps(
            {"task": "NER", "schema": labels, "text": "张三在北京。", "split_num": -1}
        ).encode()
    elif kind == "long_cjk":  # inside max_text_chars, ≈ 4 tokens a character
        body = {"messages": [{"role": "user", "content": RARE_CJK}], "max_tokens": 16}
    elif kind == "chunked_big":

        def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(2000):
                yield b"x" * 1000
            yield b'"}]}'

        return chat, chunks()
    else:
        raise ValueError(kind)
    return chat, json.dumps(body, ensure_ascii=False).encode()


async def _async_chunks(chunks):
    for c in chunks:
        yield c


def fresh_schema(i: int) -> dict:
    """A valid response schema no other request uses (≈ 2 KB): each one compiles anew."""
    props = {f"r{i}_{j}": {"type": "string", "maxLength": 4} for j in range(40)}
    return {"type": "object", "properties": props, "required": list(props)[:1]}


def p99(lat: list[float]) -> float:
    """The 99th percentile of sorted latencies (nan when there are none)."""
    return lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")


async def fire(
    url: str, n: int, clients: int, malformed: float, seed: int = 0, hostile: float = 0.0
) -> dict:
    import httpx

    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        kind = "ok"
        x = rng.random()
        if x < malformed:
            kind = rng.choice(["bad_json", "no_messages", "unknown_model"])
        elif x < malformed + hostile:
            kind = rng.choice(HOSTILE)
        elif hostile and x < malformed + 1.5 * hostile:
            kind = "ok_schema"
        jobs.append((i, kind))
    sem = asyncio.Semaphore(clients)
    results: list[tuple[str, int, float, str]] = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as c:

        async def one(i: int, kind: str) -> None:
            body: bytes
            msg = {"role": "user", "content": f"请抽取实体：样例文本{i}"}
            path = "/v1/chat/completions"
            if kind in HOSTILE:
                path, body = hostile_request(kind, i, rng)
                if not isinstance(body, bytes):  # httpx's async client streams async chunks
                    body = _async_chunks(body)
            elif kind == "ok_schema":
                schema = {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": fresh_schema(i)},
                }
                body = json.dumps(
                    {"model": "kgc", "max_tokens": 16, "messages": [msg], "response_format": schema}
                ).encode()
            elif kind == "bad_json":
                body = b'{"messages": [oops'
            elif kind == "no_messages":
                body = json.dumps({"model": "kgc"}).encode()
            elif kind == "unknown_model":
                body = json.dumps({"model": "kgc:nope", "messages": [msg]}).encode()
            else:
                body = json.dumps(
                    {"model": "kgc", "max_tokens": 16, "messages": [msg]}, ensure_ascii=False
                ).encode()
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, content=body)
                    status, text = r.status_code, r.text
                except httpx.HTTPError as exc:
                    status, text = -1, str(exc)
                results.append((kind, status, time.perf_counter() - t0, text))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, k) for i, k in jobs))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] in ("ok", "ok_schema")]
    bad = [r for r in results if r[0] not in ("ok", "ok_schema")]
    lat = sorted(r[2] for r in ok if r[1] == 200)
    return {
        "statuses": Counter(f"{k}:{s}" for k, s, _, _ in results),
        "valid_statuses": Counter(s for k, s, _, _ in results if k in ("ok", "ok_schema")),
        "valid_5xx": sum(1 for r in ok if r[1] >= 500 or r[1] < 0),
        "malformed_4xx_with_message": sum(1 for r in bad if 400 <= r[1] < 500 and r[3]),
        "malformed": len(bad),
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": p99(lat),
        "rps": len(ok) / wall,
    }


def _engine_rate(model: str, n: int) -> float:
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine

    eng = HFEngine(model, batch_size=16)
    prompts = [f"请抽取实体：样例文本{i}" for i in range(n)]
    cfg = GenerationSettings(max_new_tokens=16)
    eng.generate(prompts[:2], cfg)  # warm-up
    t0 = time.perf_counter()
    eng.generate(prompts, cfg)
    return n / (time.perf_counter() - t0)


def deploy(model: str, batch: int, ongoing: int = 64, queued: int = 256) -> str:
    from ray import serve

    from serve.app import build_app

    serve.run(
        build_app(
            {
                "model": model,
                "api_keys_env": "KGC_BENCH_KEYS",
                "batch_size": batch,
                "max_new_tokens": 16,
                "replica_cpus": 0.5,
                "max_ongoing_requests": ongoing,
                "max_queued_requests": queued,
            }
        ),
        name="kgc",
        route_prefix="/",
    )
    return "ok"


def replica_pid() -> int:
    """The model replica's process (Ray titles it `ray::ServeReplica:<app>:ModelDeployment`)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::ServeReplica") and ":ModelDeployment" in cmd.split("\0")[0]:
                return int(proc.name)
    raise RuntimeError("no ModelDeployment replica process found")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile(url: str, n: int) -> None:
    """The hostile mixed load (10 % hostile kinds, 5 % fresh valid schemas) at 32 clients."""
    pid = replica_pid()
    before = rss_mb(pid)
    # the peak from here on, not the model's loading: "5" resets VmHWM (Linux ≥ 4.0)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    load = asyncio.run(fire(url, n, 32, 0.0, seed=3, hostile=0.10))
    peak, after = rss_mb(pid, "VmHWM"), rss_mb(pid)
    kinds: Counter = Counter()
    for k, v in load["statuses"].items():
        kinds[k.split(":")[0]] += v
    print(f"hostile load: {n} requests, 32 clients; kinds {dict(sorted(kinds.items()))}")
    print(f"   statuses {dict(sorted(load['statuses'].items()))}")
    print(f"   valid requests' statuses: {dict(sorted(load['valid_statuses'].items()))}")
    print(f"   valid requests answered 5xx: {load['valid_5xx']}  (target 0)")
    print(
        f"   hostile requests answered 4xx with a message: {load['malformed_4xx_with_message']}"
        f" / {load['malformed']}"
    )
    for kind in HOSTILE:
        got = {k.split(":")[1]: v for k, v in load["statuses"].items() if k.split(":")[0] == kind}
        print(f"   {kind}: {dict(sorted(got.items()))}")
    print(
        f"   model replica memory: {before:.0f} MB before, peak {peak:.0f} MB, {after:.0f} MB after"
    )
    print(f"   valid p50 {load['p50'] * 1000:.0f} ms  p99 {load['p99'] * 1000:.0f} ms")


# --engines: the Serve head to head (issue 29)

SERVERS = {
    "A": "kgc Serve, HF engine",
    "B": "kgc Serve, vLLM engine",
    "C": "vLLM's OpenAI server",
}
PASSES = ("free", "constrained")


def chat_bodies(prompts: list[str], max_tokens: int, schemas: list[dict] | None = None) -> list:
    """The requests every server gets alike: one user turn, greedy, `max_tokens`; with
    `schemas`, each answer constrained by `response_format` (json_schema)."""
    out = []
    for i, prompt in enumerate(prompts):
        body: dict = {
            "model": "kgc",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if schemas is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "spo", "schema": schemas[i]},
            }
        out.append(json.dumps(body, ensure_ascii=False).encode())
    return out


async def drive(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[dict]]:
    """Post `bodies` to /v1/chat/completions in order from `clients` concurrent clients:
    (wall seconds, per request in order: status, seconds, answer, usage, finish reason)."""
    import httpx

    sem = asyncio.Semaphore(clients)
    out: list[dict] = [{} for _ in bodies]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=900) as c:

        async def one(i: int, body: bytes) -> None:
            res: dict = {"status": -1, "text": None, "prompt_tokens": None,
                         "completion_tokens": 0, "finish_reason": None, "error": None}  # fmt: skip
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/chat/completions", content=body)
                    res["status"] = r.status_code
                    if r.status_code == 200:
                        data = r.json()
                        choice, use = data["choices"][0], data.get("usage") or {}
                        res.update(
                            text=choice["message"]["content"],
                            finish_reason=choice.get("finish_reason"),
                            prompt_tokens=use.get("prompt_tokens"),
                            completion_tokens=use.get("completion_tokens") or 0,
                        )
                    else:
                        res["error"] = r.text[:300]
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    res["error"] = f"{type(exc).__name__}: {exc}"[:300]
                res["seconds"] = time.perf_counter() - t0
            out[i] = res

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return time.perf_counter() - t0, out


def fits(text: str | None, schema: dict) -> bool:
    """Whether an answer parses as JSON and fits its schema."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)  # type: ignore[arg-type]
    except (TypeError, ValueError, jsonschema.ValidationError):
        return False
    return True


def parsed(text: str | None) -> object:
    """An answer's JSON value, or a marker no other answer equals when it does not parse."""
    try:
        return json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return object()


def pass_summary(
    wall: float, results: list[dict], reference: list[str], schemas: list[dict] | None = None
) -> dict:
    """One server's pass: answered requests/s, completion tokens/s (the server's `usage`),
    p50/p99 latency of the answered, statuses, the share of answers identical to the
    reference (P) (a failed request is not identical), answers cut at max_tokens and, for a
    constrained pass, the share that parse as JSON and fit their schema and the share whose
    JSON value equals (P)'s (the same answer but for whitespace a grammar chose)."""
    n = len(results)
    lat = sorted(r["seconds"] for r in results if r["status"] == 200)
    return {
        "rps": len(lat) / wall,
        "tps": sum(r["completion_tokens"] for r in results) / wall,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": p99(lat),
        "statuses": dict(sorted(Counter(r["status"] for r in results).items())),
        "same": sum(r["text"] == x for r, x in zip(results, reference, strict=True)) / n,
        "cut": sum(r["finish_reason"] == "length" for r in results),
        "fit": None
        if schemas is None
        else sum(fits(r["text"], s) for r, s in zip(results, schemas, strict=True)) / n,
        "same_json": None
        if schemas is None
        else sum(parsed(r["text"]) == parsed(x) for r, x in zip(results, reference, strict=True))
        / n,
    }


def summary_line(key: str, pass_name: str, s: dict) -> str:
    line = (
        f"({key}) {SERVERS[key]:<23} {pass_name:<11} {s['rps']:7.3f} req/s {s['tps']:7.1f} tok/s"
        f"  p50 {s['p50'] * 1000:6.0f} ms  p99 {s['p99'] * 1000:6.0f} ms  statuses "
        f"{s['statuses']}  same as (P) {100 * s['same']:5.1f} %  cut at max_tokens {s['cut']}"
    )
    if s["fit"] is not None:
        line += (
            f"  parse+fit {100 * s['fit']:5.1f} %  same JSON as (P) {100 * s['same_json']:5.1f} %"
        )
    return line


def ratio_line(pass_name: str, rps: dict[str, float]) -> str:
    """`A/C`, `B/C`, `A/B` of one pass (requests/s); n/a where the divisor is 0."""

    def ratio(a: str, b: str) -> str:
        return f"{rps[a] / rps[b]:.2f}" if rps[b] else "n/a"

    return (
        f"{pass_name:<11} A/C = {ratio('A', 'C')}   B/C = {ratio('B', 'C')}   "
        f"A/B = {ratio('A', 'B')}   (goal: A/C ≥ 1.0, same as (P) ≥ 99 %)"
    )


def prompt_token_mismatches(runs: dict[str, list[dict]]) -> list[int]:
    """Requests whose `usage.prompt_tokens` differ between the servers that answered them:
    the chat template applied otherwise by one of them."""
    n = len(next(iter(runs.values())))
    return [
        i
        for i in range(n)
        if len({r[i]["prompt_tokens"] for r in runs.values() if r[i]["prompt_tokens"] is not None})
        > 1
    ]


@contextlib.contextmanager
def vllm_server(cmd: list[str], port: int, log: Path, timeout_s: float = 1200):
    """vLLM's OpenAI server (`cmd`) as a subprocess in its own process group, ready when
    /health answers 200; on leaving (also on error) that group is stopped: the server and
    the engine-core process it started, nothing else."""
    import signal
    import subprocess

    import httpx

    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-40:])

    def signal_group(sig) -> bool:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM's server exited with {proc.returncode} before it was ready; the "
                    f"end of its log ({log}):\n{tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM's server not ready after {timeout_s:.0f} s:\n{tail()}")
            time.sleep(2)
        yield proc
    finally:
        signal_group(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            proc.wait()
        for _ in range(30):  # its engine core shuts down after it
            if not signal_group(0):
                break
            time.sleep(1)
        else:
            signal_group(signal.SIGKILL)


def vllm_server_cmd(model: str, port: int, args) -> list[str]:
    """vLLM's own server with (B)'s settings: dtype, context, sequences at once, KV cache."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "kgc",
           "--dtype", "float32", "--max-model-len", str(args.max_model_len),
           "--max-num-seqs", str(args.batch_size),
           "--kv-cache-memory-bytes", str(int(args.vllm_kv_gib * 2**30)),
           "--disable-log-stats", "--uvicorn-log-level", "warning"]  # fmt: skip
    return cmd + (["--enforce-eager"] if args.vllm_eager else [])


def engines(args) -> None:
    """--engines: (P), then (A), (B) on one local Ray (one app at a time), then (C)."""
    import gc

    from extract_throughput import records, vllm_missing

    from jobs.demo import answer_schemas
    from kgc.modeling.hf_engine import HFEngine

    why = vllm_missing()
    if why:
        sys.exit(f"--engines runs kgc Serve on vLLM and vLLM's server: {why}")
    import ray
    import torch
    from ray import serve

    from kgc.engine import GenerationSettings
    from kgc.serving import Limits
    from serve.app import build_app

    torch.set_num_threads(args.threads)
    os.environ["KGC_BENCH_KEYS"] = KEY
    n, mt, cmt = args.requests, args.max_tokens, args.constrained_max_tokens
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model, label = bench_model(args.model, tmp)
        recs = records(tmp, n + args.warmup)
        if len(recs) < n + args.warmup:
            sys.exit(f"--requests {n} + --warmup {args.warmup}: the demo has {len(recs)} "
                     f"instructions; ask for at most {len(recs) - args.warmup}")  # fmt: skip
        every = answer_schemas(recs)
        prompts, schemas = [r["instruction"] for r in recs[:n]], every[:n]
        warm = [r["instruction"] for r in recs[n:]]
        bodies = {
            "free": chat_bodies(prompts, mt),
            "constrained": chat_bodies(prompts, cmt, schemas),
        }
        warm_bodies = chat_bodies(warm, mt) + chat_bodies(warm, cmt, every[n:])
        largest = max(len(json.dumps(s, ensure_ascii=False).encode()) for s in every)
        max_schema_bytes = max(Limits().max_schema_bytes, largest)
        print(f"model={label} requests={n} clients={args.clients} max_tokens={mt} "
              f"(constrained {cmt}) batch={args.batch_size} threads={args.threads} "
              f"warm-up={len(warm)}×2 "
              f"vllm: eager={args.vllm_eager} kv={args.vllm_kv_gib} GiB "
              f"max_model_len={args.max_model_len}; answer schemas up to {largest} bytes "
              f"(kgc Serve: limits.max_schema_bytes {max_schema_bytes})", flush=True)  # fmt: skip

        # (P): (b)'s engine and settings (no drafts); a schema constrains as Serve's does
        engine = HFEngine(model, batch_size=args.batch_size)  # plain batched generate
        plain = dict(jump_forward=False, lookup_drafts=0)
        ref = {
            "free": engine.generate(prompts, GenerationSettings(max_new_tokens=mt, **plain)),
            "constrained": engine.generate(
                prompts, GenerationSettings(max_new_tokens=cmt, **plain), schemas
            ),
        }
        del engine
        gc.collect()
        print("(P) plain batched generate: reference answers made", flush=True)

        runs: dict[str, dict[str, tuple[float, list[dict]]]] = {}

        def measure(key: str, url: str) -> None:
            asyncio.run(drive(url, warm_bodies, args.clients))  # warm-up, not timed
            runs[key] = {p: asyncio.run(drive(url, bodies[p], args.clients)) for p in PASSES}
            walls = ", ".join(f"{p} {runs[key][p][0]:.1f} s" for p in PASSES)
            print(f"({key}) {SERVERS[key]}: measured ({walls})", flush=True)

        base = {
            "model": model,
            "dtype": "fp32",
            "api_keys_env": "KGC_BENCH_KEYS",
            "batch_size": args.batch_size,
            "max_new_tokens": max(mt, cmt),
            "replica_cpus": args.threads,
            "limits": {"max_schema_bytes": max_schema_bytes},
        }
        vllm = {"engine": "vllm", "replica_gpus": 0, "enforce_eager": args.vllm_eager,
                "kv_cache_gib": args.vllm_kv_gib, "max_model_len": args.max_model_len}  # fmt: skip
        # the ingress takes replica_cpus too: room for both beside each other
        ray.init(num_cpus=2 * args.threads, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False)  # fmt: skip
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            for key, extra in (("A", {}), ("B", vllm)):
                serve.run(build_app({**base, **extra}), name=f"kgc-{key}", route_prefix="/")
                measure(key, f"http://127.0.0.1:{port}")
                serve.delete(f"kgc-{key}")
        finally:
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
        port = free_port()
        cmd = vllm_server_cmd(model, port, args)
        print("(C) " + " ".join(cmd[1:]), flush=True)
        with vllm_server(cmd, port, tmp / "vllm-server.log"):
            measure("C", f"http://127.0.0.1:{port}")

    print()
    for p in PASSES:
        rps = {}
        for key in SERVERS:
            wall, results = runs[key][p]
            s = pass_summary(wall, results, ref[p], schemas if p == "constrained" else None)
            rps[key] = s["rps"]
            print(summary_line(key, p, s))
            for r in results:
                if r["status"] != 200:
                    print(f"    ({key}) first failure: {r['status']} {r['error']}")
                    break
            for i, (r, x) in enumerate(zip(results, ref[p], strict=True)):
                if r["status"] == 200 and r["text"] != x:
                    print(f"    ({key}) first answer unlike (P)'s, request {i}:\n"
                          f"        {r['text']!r:.200}\n    (P) {x!r:.200}")  # fmt: skip
                    break
        print(ratio_line(p, rps) + "\n")
    for p in PASSES:
        bad = prompt_token_mismatches({k: runs[k][p][1] for k in SERVERS})
        first = {k: runs[k][p][1][bad[0] if bad else 0]["prompt_tokens"] for k in SERVERS}
        if bad:
            print(f"WARNING: {p}: usage.prompt_tokens differ between servers on {len(bad)} of "
                  f"{n} requests (a chat template applied otherwise), e.g. request {bad[0]}: "
                  f"{first}")  # fmt: skip
        else:
            print(f"{p}: usage.prompt_tokens agree between A, B and C on every answered "
                  f"request (request 0: {first})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, help="default 1000; --engines: 48")
    ap.add_argument("--phase-requests", type=int, default=200, help="requests per ratio phase")
    ap.add_argument("--hostile", action="store_true", help="the hostile mixed load only")
    ap.add_argument("--engines", action="store_true", help="Serve head to head: kgc vs vLLM")
    eng = ap.add_argument_group("--engines")
    eng.add_argument("--clients", type=int, default=8)
    eng.add_argument("--max-tokens", type=int, default=64, help="the free pass's budget")
    eng.add_argument(
        "--constrained-max-tokens",
        type=int,
        default=208,
        help="the constrained pass's budget: room for every answer to close on its own (a "
        "shorter one is closed by kgc's engine, cut by vLLM: not the same answers)",
    )
    eng.add_argument("--warmup", type=int, default=2, help="instructions sent first, untimed")
    eng.add_argument("--batch-size", type=int, default=16, help="sequences at once, all three")
    eng.add_argument("--threads", type=int, default=2, help="(P)'s torch threads, replica CPUs")
    eng.add_argument("--vllm-eager", action="store_true", help="(B), (C): no torch.compile")
    eng.add_argument("--vllm-kv-gib", type=float, default=2.0, help="(B), (C): KV cache, GiB")
    eng.add_argument("--max-model-len", type=int, default=2048, help="(B), (C): context")
    add_model_arg(ap, None)  # tiny; --engines: smollm2 (a chat template vLLM's server reads)
    args = ap.parse_args()
    args.model = args.model or ("smollm2" if args.engines else "tiny")
    if args.engines:
        args.requests = args.requests or 48
        engines(args)
        return
    args.requests = args.requests or 1000

    import ray
    from ray import serve

    os.environ["KGC_BENCH_KEYS"] = KEY
    with tempfile.TemporaryDirectory() as t:
        model, label = bench_model(args.model, Path(t))
        print(f"model={label}", flush=True)
        ray.init(
            num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
        )
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"

        deploy(model, 16)
        if args.hostile:
            hostile(url, args.requests)
            serve.shutdown()
            ray.shutdown()
            return
        load = asyncio.run(fire(url, args.requests, 32, 0.05))
        n = args.phase_requests
        batched = asyncio.run(fire(url, n, 16, 0.0, seed=1))
        deploy(model, 1)
        unbatched = asyncio.run(fire(url, n, 16, 0.0, seed=1))
        deploy(model, 16, ongoing=2, queued=2)
        over = asyncio.run(fire(url, n, 64, 0.0, seed=2))
        serve.shutdown()
        # the engine alone, in a Ray task with the replica's CPUs (same threads), on the
        # same prompts and budget: what Serve's batched rate is measured against
        engine_rps = ray.get(ray.remote(num_cpus=0.5)(_engine_rate).remote(model, n))
        ray.shutdown()

    print(f"1) {args.requests} requests, 32 clients, 5% malformed")
    print(f"   statuses {dict(sorted(load['statuses'].items()))}")
    print(f"   valid requests answered 5xx: {load['valid_5xx']}")
    print(
        f"   malformed answered 4xx with a message: {load['malformed_4xx_with_message']}"
        f" / {load['malformed']}"
    )
    print(
        f"   p50 {load['p50'] * 1000:.0f} ms  p99 {load['p99'] * 1000:.0f} ms  "
        f"{load['rps']:.1f} req/s"
    )
    ratio = batched["rps"] / unbatched["rps"]
    print(
        f"2) 16 clients: batched {batched['rps']:.1f} req/s, unbatched "
        f"{unbatched['rps']:.1f} req/s → {ratio:.2f}x (target ≥ 3x)"
    )
    print(
        f"   the engine alone (HFEngine, 16 slots, same prompts): {engine_rps:.1f} req/s → "
        f"Serve/engine {batched['rps'] / engine_rps:.2f} (target ≥ 0.8)"
    )
    print(
        f"3) overload (2 ongoing + 2 queued, 64 clients): {dict(over['statuses'])}, "
        f"5xx other than 503: {sum(v for k, v in over['statuses'].items() if k.split(':')[1] not in ('200', '503', '429'))}"
    )


if __name__ == "__main__":
    main()
