"""`kgc icl --config …` for every mode (file and single text), config errors, the shipped
configs, the Ray job entry point, and the Ray Data back end (actors on a local Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

from kgc.cli import main  # noqa: E402
from kgc.errors import KgcError  # noqa: E402
from kgc.icl.config import load_icl_config  # noqa: E402
from tests.support.replay import ReplayServer, load_rules  # noqa: E402

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "icl"
CONFIGS = sorted((ROOT / "jobs" / "configs").glob("icl_*.yaml"))


def kgc_icl(capsys, config, srv, tmp_path, *extra) -> tuple[int, str, str]:
    """`kgc icl --config …` in-process; options first, then every key=value override (argparse
    wants the positional overrides together)."""
    opts = [
        a
        for i, a in enumerate(extra)
        if a.startswith("--") or (i and extra[i - 1].startswith("--"))
    ]
    overrides = [a for a in extra if a not in opts]
    code = main(
        [
            "icl",
            "--config",
            str(config),
            "--quiet",
            *opts,
            f"client.base_url={srv.base_url}",
            "client.allow_no_key=true",
            f"client.cache_dir={tmp_path / 'cache'}",
            f"output={tmp_path / 'out'}",
            *overrides,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_configs_validate_and_point_at_bundled_files():
    assert {p.stem for p in CONFIGS} >= {
        "icl_llmicl_ner",
        "icl_ccks2023",
        "icl_fewshot_re",
        "icl_augment",
        "icl_codekgc",
    }
    for path in CONFIGS:
        cfg = load_icl_config(path)
        files = [cfg.input, getattr(cfg, cfg.mode).model_dump().get("demos")]
        files.append(cfg.fewshot_re.train if cfg.mode == "fewshot_re" else None)
        for f in filter(None, files):
            assert (ROOT / f).exists(), (path.name, f)
        assert "sk-" not in path.read_text() and "api_key:" not in path.read_text()
    # a key cannot be put in a config at all: there is no field for it
    with pytest.raises(KgcError, match="unknown key 'client.api_key'"):
        load_icl_config(CONFIGS[0], ["client.api_key=sk-123"])


def test_fewshot_re_prints_f1(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    rules, default = load_rules(EX / "replay_fewshot_re.json")
    with ReplayServer(rules, default=default) as srv:
        code, out, _ = kgc_icl(capsys, "jobs/configs/icl_fewshot_re.yaml", srv, tmp_path)
    assert code == 0
    summary, report = out.strip().splitlines()
    assert json.loads(summary)["scores"]["f1"] == pytest.approx(2 / 3)
    assert report.startswith("micro P 71.43  R 62.50  F1 66.67")
    rows = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 10
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rows"] == 10


def test_codekgc_prints_f1(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    rules, default = load_rules(EX / "replay_codekgc.json")
    with ReplayServer(rules, default=default) as srv:
        code, out, _ = kgc_icl(capsys, "jobs/configs/icl_codekgc.yaml", srv, tmp_path)
    assert code == 0 and out.strip().splitlines()[-1] == "triple: P 83.33  R 55.56  F1 66.67"


def test_rerun_is_served_from_the_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with ReplayServer([], default='{"person": []}') as srv:
        kgc_icl(capsys, "jobs/configs/icl_llmicl_ner.yaml", srv, tmp_path)
        assert srv.count() == 3
        code, out, _ = kgc_icl(capsys, "jobs/configs/icl_llmicl_ner.yaml", srv, tmp_path)
        assert code == 0 and srv.count() == 3  # nothing sent the second time
    s = json.loads(out.splitlines()[0])
    assert s["cache_hits"] == 3 and s["http_attempts"] == 0


@pytest.mark.parametrize(
    "config, args, check",
    [
        ("icl_llmicl_ner.yaml", ["--text", "Ann Lee lives in Oslo."], lambda r: r["records"] == [{"entity": "Ann Lee", "entity_type": "person"}]),
        ("icl_llmicl_ner.yaml", ["--text", "Ann went to Rome.", "llmicl.task=re", "llmicl.labels=[lives in]", "--head", "Ann", "--tail", "Rome"], lambda r: r["records"] == []),
        ("icl_fewshot_re.yaml", ["--text", "Software maker Quillon was founded by Sara Lind .", "--head", "Quillon", "--tail", "Sara Lind"], lambda r: r["prediction"] == "no_relation"),
        ("icl_codekgc.yaml", ["--text", "Ann Lee works for Acme ."], lambda r: r["triples"] == []),
        ("icl_augment.yaml", ["--relation", "org:founded_by"], lambda r: r["id"] == "org:founded_by#1"),
    ],
)  # fmt: skip
def test_single_text_prints_one_row(capsys, tmp_path, monkeypatch, config, args, check):
    monkeypatch.chdir(ROOT)
    reply = '{"person": ["Ann Lee"]}'
    with ReplayServer([], default=reply) as srv:
        code, out, _ = kgc_icl(capsys, f"jobs/configs/{config}", srv, tmp_path, *args)
    rows = [json.loads(x) for x in out.strip().splitlines()]
    assert code == 0 and len(rows) == (2 if "augment" in config else 1)
    assert check(rows[0])
    assert not (tmp_path / "out").exists()  # a single text writes no files


@pytest.mark.parametrize(
    "args, message",
    [
        (["client.modle=x"], "unknown key 'client.modle'"),
        (["codekgc.relations=[a]"], "section(s) codekgc are set but mode is 'llmicl'"),
        (["llmicl.task=pos"], "llmicl.task"),
        (["client.allow_no_key=false", "client.api_key_env=KGC_NO_SUCH_VAR"], "KGC_NO_SUCH_VAR"),
        (["--text", "x", "llmicl.task=re"], "needs the entity pair"),
        (["input=/nonexistent.jsonl"], "input file does not exist"),
    ],
)
def test_errors_exit_2_with_the_fix(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("KGC_NO_SUCH_VAR", raising=False)
    with ReplayServer([]) as srv:
        code, _, err = kgc_icl(capsys, "jobs/configs/icl_llmicl_ner.yaml", srv, tmp_path, *args)
    assert code == 2 and message in err


def test_job_entry_point():
    doc = (ROOT / "jobs" / "icl.py").read_text()
    assert "ray job submit --working-dir . -- python -m jobs.icl --config" in doc
    assert "kgc icl --config" in doc
    out = subprocess.run(
        [sys.executable, "-m", "jobs.icl", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--config" in out.stdout


@pytest.mark.timeout(180)
def test_ray_data_backend_matches_threads_and_shares_the_cache(local_ray, tmp_path, monkeypatch):
    """Requests fan out to Ray Data actors (fractional CPUs); the API key reaches them through
    the runtime env; every id comes back once; a threads rerun is served from their cache."""
    from kgc.icl.runner import run_icl
    from kgc.runtime.icl import execute_ray

    monkeypatch.setenv("KGC_ICL_RAY_KEY", "sk-ray-test")
    rules, default = load_rules(EX / "replay_fewshot_re.json")
    with ReplayServer(rules, default=default, api_key="sk-ray-test") as srv:
        data = {
            "mode": "fewshot_re",
            "input": str(EX / "tacred_test.json"),
            "client": {
                "base_url": srv.base_url,
                "model": "m",
                "api_key_env": "KGC_ICL_RAY_KEY",
                "cache_dir": str(tmp_path / "cache"),
                "concurrency": 2,
            },
            "runner": {"backend": "ray", "num_actors": 2, "cpus_per_actor": 0.25, "batch_size": 3},
            "fewshot_re": {"train": str(EX / "tacred_train.json"), "k": 1},
        }
        ray_res = run_icl(load_icl_config(None, data=data), ray_execute=execute_ray)
        assert srv.count() == 10 and all(r["auth"] == "Bearer sk-ray-test" for r in srv.requests)
        data["runner"] = {"backend": "threads"}
        thread_res = run_icl(load_icl_config(None, data=data))
        assert srv.count() == 10  # all 10 answers came from the actors' cache
    assert ray_res.summary["backend"] == "ray" and thread_res.summary["cache_hits"] == 10
    assert [r["id"] for r in ray_res.rows] == [r["id"] for r in thread_res.rows]
    assert [r["prediction"] for r in ray_res.rows] == [r["prediction"] for r in thread_res.rows]
    assert ray_res.summary["scores"] == thread_res.summary["scores"]


@pytest.mark.timeout(180)
def test_ray_data_backend_fails_loudly_when_no_batch_comes_back(local_ray, tmp_path):
    """An endpoint that never answers in time: the driver's watchdog (kgc.runtime.pool) stops
    the run after runner.stall_timeout_s instead of waiting on the actor forever."""
    from kgc.icl.runner import run_icl
    from kgc.runtime.icl import execute_ray

    with ReplayServer(default="{}", latency_s=30) as srv:
        cfg = load_icl_config(
            None,
            data={
                "mode": "llmicl",
                "client": {
                    "base_url": srv.base_url,
                    "model": "m",
                    "allow_no_key": True,
                    "cache_dir": None,
                    "timeout_s": 10,  # the actor is free again soon after
                    "max_retries": 0,
                },
                "runner": {"backend": "ray", "num_actors": 1, "stall_timeout_s": 3},
            },
        )
        with pytest.raises(KgcError, match="ICL stalled: no batch finished in 3 s"):
            run_icl(cfg, single={"text": "Ann met Bob."}, ray_execute=execute_ray)


def test_icl_modules_import_without_openai_ray_or_torch():
    code = (
        "import sys, json\n"
        "import kgc.cli, kgc.icl.cli, kgc.icl.runner, kgc.icl.llmicl, kgc.icl.fewshot_re\n"
        "import kgc.icl.augment, kgc.icl.codekgc\n"
        "kgc.cli.build_parser()\n"
        "print(json.dumps([m for m in ('openai', 'ray', 'torch', 'httpx') if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
