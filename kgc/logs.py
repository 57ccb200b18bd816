"""A quiet console by default: the known-harmless warnings and chatter of the libraries kgc
drives are filtered at their source; `--verbose` (or `KGC_LOG=debug`) shows everything.
Each filter, where its message comes from and why it is harmless: docs/console.md. Nothing
else is hidden, and no error is.

`quiet()` runs in the driver (the `kgc` command, `jobs/*`) before the libraries are imported.
Ray workers print nothing to the driver's console (`log_to_driver=False`: their output is in
Ray's log files, `ray logs`), so their filters do not matter here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import warnings

# environment variables the libraries read at import
ENV = {
    # transformers / huggingface_hub: no "Loading weights" / "Writing model shards" bars
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # tokenizers: no "the current process just got forked … disabling parallelism" notice
    # (kgc's processes that fork, Ray's workers, tokenize on their own)
    "TOKENIZERS_PARALLELISM": "false",
}

# (category, message regex, module regex) of warnings that say nothing to a kgc user
WARNINGS = (
    # transformers' and peft's deprecation notices about their own internals
    (FutureWarning, r"", r"transformers(\.|$)"),
    (FutureWarning, r"", r"peft(\.|$)"),
    # torch.jit deprecation, raised by libraries' import-time scripting
    (DeprecationWarning, r".*torch\.jit.*", r""),
)

# (logger, level): libraries that log harmless notices at INFO/WARNING
LOGGERS = (
    # bitsandbytes: "Failed to load CPU gemm_4bit_forward from kernels-community" (an
    # optional fast kernel fetched from the Hub; the built-in CPU kernel is used instead)
    ("bitsandbytes.backends.cpu.ops", logging.ERROR),
    # Ray Data: "Progress bars disabled" (kgc prints its own progress lines) and the
    # per-dataset "Starting execution" / "Execution plan" / "finished" INFO lines
    ("ray.data._internal.progress", logging.ERROR),
    ("ray.data", logging.WARNING),
    # Ray Train / Serve INFO lines (controller and worker-group status)
    ("ray.train", logging.WARNING),
    ("ray.serve", logging.WARNING),
)

# lines that native code (Ray's C++ core worker) writes straight to the process's stderr
NATIVE_LINES = (
    # Ray Data's actor pools keep the UDF's constructor arguments in the object store and
    # restart lost actors (max_restarts > 0): Ray notes that a restart would fail if those
    # arguments were lost (ray-project/ray#53727). kgc's own restart tests cover the case.
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* max_restarts > 0"),
)


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("KGC_LOG", "").lower() in ("debug", "verbose", "all")


def ray_logging_level() -> int:
    """Ray's driver logging level: WARNING by default ("Started a local Ray instance" and
    the dashboard banner are INFO), INFO when verbose."""
    return logging.INFO if verbose_requested() else logging.WARNING


def _no_gpu() -> bool:
    return os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not any(
        os.path.exists(f"/dev/nvidia{i}") for i in range(8)
    )


def quiet(verbose: bool = False, native: bool = False) -> None:
    """Apply the filters in this process (nothing when verbose is asked for); `native`: also
    filter what C++ code writes to fd 2 (the command line only: it rewires fd 2)."""
    if verbose_requested(verbose):
        os.environ["KGC_LOG"] = "debug"  # subprocesses and Ray job drivers too
        return
    env = dict(ENV)
    if _no_gpu():
        # DeepSpeed probes for an accelerator at import and warns "Setting accelerator to
        # CPU" where there is no GPU; naming the CPU accelerator skips the probe
        env["DS_ACCELERATOR"] = "cpu"
    for key, value in env.items():
        os.environ.setdefault(key, value)
    for category, message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    settle_loggers()
    if native:
        filter_native_stderr()


def settle_loggers() -> None:
    """The LOGGERS levels, again: Ray Data configures its loggers when it is imported, after
    `quiet()` ran; the code that imports it calls this (nothing when verbose)."""
    if verbose_requested():
        return
    for name, level in LOGGERS:
        logging.getLogger(name).setLevel(level)


_FILTER: dict = {}


def filter_native_stderr() -> None:
    """Drop NATIVE_LINES from what this process writes to file descriptor 2 (C++ libraries
    write there directly, past Python's logging): fd 2 becomes a pipe that a thread copies to
    the real stderr line by line, skipping those lines. Everything else passes unchanged;
    at exit the pipe is drained before the process ends."""
    if _FILTER or not hasattr(os, "pipe"):
        return
    try:
        real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:
        return

    def pump() -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(r, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out = [ln for ln in lines if not _harmless(ln)]
            if out:
                os.write(real, b"\n".join(out) + b"\n")
        if buf and not _harmless(buf):
            os.write(real, buf)

    t = threading.Thread(target=pump, name="kgc-stderr", daemon=True)
    t.start()
    _FILTER.update(real=real, thread=t)

    def drain() -> None:
        with contextlib.suppress(Exception):  # closing anyway
            sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the thread sees EOF
        t.join(timeout=5)

    atexit.register(drain)


def _harmless(line: bytes) -> bool:
    text = line.decode("utf-8", "replace")
    return any(p.search(text) for p in NATIVE_LINES)
