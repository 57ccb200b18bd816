"""Every shipped YAML config validates (model and data pointed at local test fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import IEPILE

from kgc.cli import main
from kgc.config import load_config

ALL = sorted((Path(__file__).resolve().parent.parent / "jobs" / "configs").glob("*.yaml"))
CONFIGS = [p for p in ALL if not p.stem.startswith(("extract", "graph", "pipeline", "icl", "eval"))]
EXTRACT = [p for p in ALL if p.stem.startswith("extract")]


@pytest.fixture(scope="module")
def legacy_train_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy") / "train.jsonl"
    assert (
        main(
            [
                "convert",
                "--task",
                "RE",
                "--format",
                "ccks2023",
                "--input",
                str(IEPILE / "RE" / "sample.json"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_configs_exist():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path, tiny_llama, ner_train_file, legacy_train_file):
    pytest.importorskip("transformers")
    from kgc.modeling.training import validate

    data = legacy_train_file if "ccks2023" in path.stem else ner_train_file
    cfg = load_config(path, [f"model.path={tiny_llama}", f"data.train_file={data}"])
    assert validate(cfg) == []


def test_cli_check(tiny_llama, ner_train_file, capsys):
    pytest.importorskip("transformers")
    code = main(
        [
            "train",
            "--config",
            str(CONFIGS[0]),
            "--check",
            f"model.path={tiny_llama}",
            f"data.train_file={ner_train_file}",
        ]
    )
    assert code == 0
    code = main(
        [
            "train",
            "--config",
            str(CONFIGS[0]),
            "--check",
            "model.path=/nope",
            f"data.train_file={ner_train_file}",
            "train.bogus=1",
        ]
    )
    assert code == 2
    assert "unknown key 'train.bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("path", EXTRACT, ids=lambda p: p.stem)
def test_shipped_extract_config_validates(path):
    from kgc.config import ExtractConfig

    cfg = load_config(path, [], schema=ExtractConfig)
    assert cfg.task and cfg.output.path and cfg.workers.num_actors >= 1


def test_serve_config_validates():
    import yaml

    from kgc.serving import ServeSettings

    conf = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "serve" / "config.yaml").read_text()
    )
    app = conf["applications"][0]
    assert app["import_path"] == "serve.app:build_app"
    assert conf["http_options"]["host"] == "127.0.0.1"
    ServeSettings.model_validate(app["args"])


@pytest.mark.parametrize(
    "path", [p for p in ALL if p.stem.startswith("eval")], ids=lambda p: p.stem
)
def test_eval_configs_validate(path):
    from kgc.config import EvalConfig

    cfg = load_config(path, [], schema=EvalConfig)
    assert (Path(__file__).resolve().parent.parent / cfg.input).is_file()
