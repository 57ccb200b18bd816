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


def _slow(n: int, seconds: float, beats: list[int] | None = None):
    """Batches that each take `seconds`; while one is made, `beats` is bumped (the actors'
    heartbeat: tokens are being generated)."""
    for _ in range(n):
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(0.05)
            if beats is not None:
                beats[0] += 1
        yield [0, 1]


def test_a_slow_batch_with_token_progress_is_not_a_stall():
    beats = [0]
    seen = []
    drain(
        _slow(2, 2.5, beats),
        seen.append,
        total=4,
        stall_s=1,
        what="work",
        advice="",
        heartbeat=lambda: beats[0],
    )
    assert len(seen) == 2


def test_a_slow_batch_without_progress_is_a_stall():
    beats = [0]
    with pytest.raises(KgcError, match=r"no batch finished and no token was generated in 1 s"):
        drain(
            _slow(2, 30),
            lambda b: None,
            total=4,
            stall_s=1,
            what="work",
            advice="",
            heartbeat=lambda: beats[0],
        )


def test_nothing_prints_after_a_stall(capfd, monkeypatch):
    """After the stall error the abandoned pipeline's threads and Ray's loggers are quiet,
    and stderr is muted at exit before Ray's own exit handler runs."""
    import atexit
    import logging
    import threading

    from kgc.runtime.pool import quiet_abandoned_pipeline

    at_exit = []
    monkeypatch.setattr(atexit, "register", at_exit.append)  # not this test process's exit

    logging.getLogger("ray.data._internal.execution.streaming_executor").addHandler(
        logging.StreamHandler()
    )
    before = threading.excepthook
    try:
        quiet_abandoned_pipeline()

        def dies():
            raise RuntimeError("abandoned pipeline traceback")

        th = threading.Thread(target=dies)
        th.start()
        th.join()
        logging.getLogger("ray.data._internal.execution.streaming_executor").error("boom")
        logging.getLogger("ray").error("boom")
        err = capfd.readouterr().err
        assert "abandoned pipeline" not in err and "boom" not in err, err
        assert len(at_exit) == 1
    finally:
        threading.excepthook = before
        for name in list(logging.root.manager.loggerDict):
            if name == "ray" or name.startswith("ray."):
                log = logging.getLogger(name)
                log.disabled, log.propagate = False, True
                log.setLevel(logging.NOTSET)
