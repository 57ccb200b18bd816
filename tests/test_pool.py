"""The actor pool's driver side (`kgc.runtime.pool.drain`) without a cluster: batches reach
`on_batch`, errors come back to the driver, and a pipeline that stops producing fails."""

from __future__ import annotations

import time

import pytest

from kgc.errors import KgcError
from kgc.runtime.pool import drain


def _batches(n: int, hang_after: int | None = None, size: int = 2):
    for i in range(n):
        if i == hang_after:
            time.sleep(30)  # a hung actor: Ray Data would wait for it forever
        yield list(range(size))


def test_every_batch_reaches_on_batch():
    seen = []
    drain(_batches(3), seen.append, total=6, stall_s=5, what="test", advice="")
    assert seen == [[0, 1]] * 3


def test_an_error_in_on_batch_reaches_the_driver():
    def boom(batch):
        raise KgcError("fatal for the run")

    with pytest.raises(KgcError, match="fatal for the run"):
        drain(_batches(3), boom, total=6, stall_s=5, what="test", advice="")


def test_no_batch_for_stall_s_fails_with_the_count_and_the_advice():
    t0 = time.time()
    with pytest.raises(
        KgcError, match=r"^work stalled: no batch finished in 1 s \(2/6 rows done\)\. Rerun"
    ):
        drain(
            _batches(3, hang_after=1),
            lambda b: None,
            total=6,
            stall_s=1,
            what="work",
            advice="Rerun.",
        )
    assert time.time() - t0 < 10
