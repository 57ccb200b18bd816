"""ROUGE-1/2/L F-measures, pure Python.

Chinese text is segmented into characters (default) or words with jieba (optional
dependency, imported only when asked for); English text is normalised — lower case,
punctuation to spaces, articles a/an/the removed — and split on whitespace. Two empty texts
score 1, exactly one empty text scores 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
SEGMENTERS = ("char", "jieba")


def detect_language(text: str) -> str:
    return "zh" if _CJK.search(text or "") else "en"


def normalize_en(text: str) -> str:
    text = _PUNCT.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokenize(text: str, language: str | None = None, segmenter: str = "char") -> list[str]:
    language = language or detect_language(text)
    if language == "zh":
        if segmenter == "jieba":
            try:
                import jieba
            except ImportError:
                from kgc.errors import KgcError

                raise KgcError(
                    "--segmenter jieba needs the jieba package: pip install 'kgc[zh]'"
                ) from None
            jieba.setLogLevel(60)
            return [t for t in jieba.cut(text) if t.strip()]
        return [c for c in text if not c.isspace()]
    return normalize_en(text).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f(overlap: int, n_hyp: int, n_ref: int) -> float:
    if n_hyp == 0 or n_ref == 0 or overlap == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_scores(hyp: list[str], ref: list[str]) -> dict[str, float]:
    """F-measures of ROUGE-1, ROUGE-2 and ROUGE-L for token lists."""
    if not hyp and not ref:
        return {"rouge-1": 1.0, "rouge-2": 1.0, "rouge-l": 1.0}
    if not hyp or not ref:
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    out = {}
    for n in (1, 2):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        out[f"rouge-{n}"] = _f(sum((h & r).values()), sum(h.values()), sum(r.values()))
    out["rouge-l"] = _f(lcs_length(hyp, ref), len(hyp), len(ref))
    return out


def rouge(hyp: str, ref: str, language: str | None = None, segmenter: str = "char") -> dict:
    language = language or detect_language(ref or hyp)
    return rouge_scores(tokenize(hyp, language, segmenter), tokenize(ref, language, segmenter))
