"""The train workers' glibc malloc settings (kgc.runtime.train.allocator_env): what they are,
that an operator's own settings win, and that they stop a thread's big blocks from being
unmapped and faulted in again every time (what made each training step page-fault its
activations)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from kgc.runtime.train import GLIBC_MALLOC_ENV, allocator_env

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc only",
)

# a thread (as Ray Train V2 runs the loop) mallocs, writes and frees 256 MiB twice; prints the
# page faults of the second round
PROBE = r"""
import ctypes, resource, threading
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
out = []
def work():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(256 << 20)
        libc.memset(p, 1, 256 << 20)
        libc.free(p)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(out[1])
"""


@glibc
def test_operator_settings_win():
    assert allocator_env({}) == GLIBC_MALLOC_ENV
    mine = {"MALLOC_ARENA_MAX": "4", "PATH": "/bin"}
    got = allocator_env(mine)
    assert "MALLOC_ARENA_MAX" not in got
    assert got == {k: v for k, v in GLIBC_MALLOC_ENV.items() if k != "MALLOC_ARENA_MAX"}


def test_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    assert allocator_env({}) == {}


@glibc
def test_a_threads_big_blocks_stay_mapped():
    def faults(extra: dict) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        got = subprocess.run(
            [sys.executable, "-c", PROBE], env={**env, **extra},
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return int(got.stdout)

    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert faults({}) > pages // 2  # glibc's defaults: mmap'd, unmapped, faulted in again
    assert faults(allocator_env({})) < pages // 50  # kept: the second round reuses it
