"""Parser throughput: kgc's tolerant parser vs plain `json.loads`, measured in one run.

    python bench/parse_throughput.py [--n 20000]

Prints outputs/s for: the baseline (`json.loads` + dict walk, clean outputs only), kgc on
the same clean outputs (fast path), and kgc on damaged outputs (fences, single quotes,
truncation) that `json.loads` rejects — with ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from kgc import tasks

CLEAN = {
    "人物": ["张三", "李四"],
    "地理位置": ["北京"],
    "组织机构": ["星辰公司", "月亮科技有限公司"],
}


def outputs(n: int, damaged: bool, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = json.dumps(CLEAN, ensure_ascii=False)
    out = []
    for _ in range(n):
        s = base
        if damaged:
            kind = rng.randrange(3)
            if kind == 0:
                s = "```json\n" + s + "\n```"
            elif kind == 1:
                s = s.replace('"', "'")
            else:
                s = s[: rng.randrange(5, len(s))]
        out.append(s)
    return out


def baseline(texts: list[str]) -> int:
    n = 0
    for t in texts:
        for etype, ents in json.loads(t).items():
            n += sum(1 for e in ents if isinstance(e, str) and etype)
    return n


def kgc_parse(texts: list[str]) -> int:
    ner = tasks.get("NER")
    return sum(len(ner.parse(t).records) for t in texts)


def rate(fn, texts) -> float:
    fn(texts[:100])  # warm-up
    t0 = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    n = ap.parse_args().n
    clean, damaged = outputs(n, False), outputs(n, True)
    base = rate(baseline, clean)
    fast = rate(kgc_parse, clean)
    slow = rate(kgc_parse, damaged)
    print(f"{'case':<40} {'outputs/s':>12} {'vs json.loads':>14}")
    print(f"{'json.loads baseline (clean)':<40} {base:12,.0f} {1.0:14.2f}")
    print(f"{'kgc NER parser (clean)':<40} {fast:12,.0f} {fast / base:14.2f}")
    print(f"{'kgc NER parser (damaged; json fails)':<40} {slow:12,.0f} {slow / base:14.2f}")


if __name__ == "__main__":
    main()
