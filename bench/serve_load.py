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

  python bench/serve_load.py [--requests 1000] [--model tiny|small|smollm2]
  python bench/serve_load.py --model smollm2 --requests 160 --phase-requests 64
  python bench/serve_load.py --hostile [--requests 1000]
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
        "p99": lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--phase-requests", type=int, default=200, help="requests per ratio phase")
    ap.add_argument("--hostile", action="store_true", help="the hostile mixed load only")
    add_model_arg(ap, "tiny")
    args = ap.parse_args()

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
