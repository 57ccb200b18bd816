"""The quiet console (kgc.logs): known-harmless messages are filtered at their source,
everything else passes, and --verbose / KGC_LOG=debug turns the filters off. Each case runs
in a fresh interpreter (the filters are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

from kgc.logs import ENV

RAY_LINE = (
    "[2026-12-02 04:53:44,835 E 18991 19774] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(ExtractUDF))' and ID: '88c6' has constructor arguments in the "
    "object store and max_restarts > 0. If the arguments in the object store go out of scope "
    "or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details."
)

PROGRAM = f"""
import logging, os, sys, warnings
from kgc.logs import quiet
quiet(native=True)
os.write(2, {RAY_LINE!r}.encode() + b"\\nnative line kept\\n")
logging.basicConfig()
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
logging.getLogger("bitsandbytes.nn").warning("bitsandbytes warning kept")
warnings.warn_explicit("deprecated inside transformers", FutureWarning, "x.py", 1,
                       module="transformers.modeling_utils")
warnings.warn_explicit("a FutureWarning of kgc kept", FutureWarning, "y.py", 1, module="kgc.x")
print("env", os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), os.environ.get("KGC_LOG"))
"""


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    # the suite's own process may have run quiet() already, which sets these
    env = {k: v for k, v in os.environ.items() if k != "KGC_LOG" and k not in ENV}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env={**env, **env_extra}
    )


def test_known_messages_are_filtered_and_others_pass():
    done = _run({})
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "max_restarts > 0" not in err and "native line kept" in err
    assert "gemm_4bit_forward" not in err and "bitsandbytes warning kept" in err
    assert "deprecated inside transformers" not in err
    assert "a FutureWarning of kgc kept" in err
    assert "env 1 None" in done.stdout


def test_verbose_shows_everything():
    done = _run({"KGC_LOG": "debug"})
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "max_restarts > 0" in err and "gemm_4bit_forward" in err
    assert "deprecated inside transformers" in err
    assert "env None debug" in done.stdout


def test_the_command_line_takes_verbose():
    from kgc.cli import build_parser

    assert build_parser().parse_args(["--verbose", "model", "list"]).verbose is True
