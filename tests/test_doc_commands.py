"""Every shell command in the READMEs and docs is checked, so that the docs stay true.

The commands come from the fenced code blocks (```bash, ```sh, ```shell, ```console, and
bare ``` blocks whose first line starts with a known program) of README.md, docs/*.md and
every README.md below the root. Each one must have an entry in COMMANDS (keyed by its text as
written, comments dropped, continuation lines joined, whitespace collapsed) saying how it is
checked:

- RUN: cheap and local, so it runs, in-process, in a temporary folder: repository paths in it
  become absolute, `/tmp/…` lands in the temporary folder, `extra` arguments redirect
  outputs, `setup` copies input files there first; it must exit 0 (and, with `output=True`,
  print the doc's `# …` line under it). Commands of one block run in order in one folder, so
  a block can build a model and use it. `python -m tests.support.replay … &` starts the
  replay server in-process; later commands' `127.0.0.1:<port>` reach it.
- STATIC: needs a GPU, a cluster, an API key, a network, a server, or minutes of CPU, so it
  is checked without running: the program exists (a `kgc` subcommand of
  `kgc.cli.build_parser()`, a `python -m` module, a Makefile target, a `ray` subcommand),
  argparse accepts its arguments, `--config` files load with the command's schema and its
  overrides, and the repository files it names exist.

A command added to a doc without an entry here fails the test with the line to add.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kgc.cli import build_parser, main
from kgc.errors import KgcError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)

DOCS = sorted(
    p
    for p in {
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *ROOT.glob("*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    }  # fmt: skip
    if not p.relative_to(ROOT).parts[0].startswith((".", "out", "runs", "build", "dist"))
)
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
PROGRAMS = ("kgc", "python", "make", "ray", "serve", "curl", "export", "pip")
REPO_DIRS = ("examples/", "jobs/", "serve/", "cluster/", "docs/", "bench/", "tests/", "kgc/")


@dataclass(frozen=True)
class Check:
    how: str  # "run" or "static"
    why: str = ""  # static: what running it needs
    setup: dict = field(default_factory=dict)  # run: temp-folder name → repository file
    extra: tuple = ()  # run: arguments appended (outputs into the temp folder, --check)
    output: bool = False  # run: the doc's `# …` line under the command is what it prints


def RUN(*extra: str, setup: dict | None = None, output: bool = False) -> Check:  # noqa: N802
    return Check("run", setup=setup or {}, extra=extra, output=output)


def STATIC(why: str) -> Check:  # noqa: N802
    return Check("static", why=why)


GPU, CLUSTER, MINUTES = "a GPU model", "a Ray cluster", "minutes of CPU (Ray Train)"
SERVER = "a running Serve app (tests/test_serve.py runs it)"
K8S = "a Kubernetes cluster with KubeRay (tests/test_k8s.py checks the manifests)"

# Reviewed: every documented command and how it is checked.
COMMANDS: dict[str, Check] = {
    # README.md
    "make demo": STATIC("≈25 min on 2 CPUs; tests/test_demo.py runs the chain on a tiny model"),
    "make test": STATIC("the whole test suite"),
    "kgc review out/extract --schema examples/demo/schema.json": STATIC("a web app that runs until stopped; tests/test_review.py drives its API, tests/test_review_browser.py its page"),
    "python -m jobs.review --corrections out/extract/corrections.jsonl --checkpoint CKPT --out out/review": STATIC(MINUTES + " and a checkpoint; tests/test_review_job.py runs the stages on a tiny model"),
    "kgc model prepare smollm2-135m-instruct": STATIC("≈40 s of conversion, once"),
    "kgc model prepare /models/mistral-7b.Q8_0.gguf": STATIC("a 7B model file"),
    "kgc model list": RUN(),
    "kgc convert --task NER --input my.jsonl --schema my_schema.json --output ner.train.jsonl --split-num 6": STATIC("the user's own files"),
    "kgc train --config jobs/configs/ner_lora.yaml model.path=/models/Qwen2.5-7B-Instruct data.train_file=ner.train.jsonl": STATIC(GPU),
    "kgc train --config jobs/configs/ner_lora.yaml model.path=smollm2-135m-instruct data.train_file=ner.train.jsonl distributed.use_gpu=false distributed.strategy=ddp train.shared_prefix=true method.lora.top_layers=10": STATIC(MINUTES),
    "kgc extract --config jobs/configs/extract_ner.yaml engine.checkpoint=runs/ner-lora-qwen2.5-7b/checkpoint_… input.path=s3://bucket/corpus/ workers.num_actors=4 workers.gpus_per_actor=1 generation.constrained=true": STATIC(GPU + ", S3"),
    "kgc graph build --config jobs/configs/graph_demo.yaml input.paths=out/extract output.path=out/graph": STATIC("extraction output"),
    "kgc serve --config serve/config.yaml": STATIC(GPU),
    "kgc convert --task NER --input examples/iepile/NER/sample.json --schema examples/iepile/NER/schema.json --output ner.train.jsonl --split train --language zh --split-num 6 --neg-prob 1.0": RUN(),
    "kgc convert --task RE --input raw.jsonl --schema schema.json --output re.test.jsonl --split test": STATIC("the user's own files"),
    "kgc eval --task NER --input predictions.jsonl --by source": RUN(setup={"predictions.jsonl": "examples/predictions/NER.test.pred.jsonl"}),
    "kgc eval --task EE --input predictions.jsonl --json": STATIC("EE predictions (none bundled)"),
    "kgc eval --task RE --input preds.jsonl --format ccks2023": STATIC("CCKS2023 predictions (none bundled)"),
    "kgc tiny-model --arch qwen2 --out /tmp/tiny-qwen2": RUN(),
    # docs/deepke.md (tests/test_spert.py converts a hand-written SpERT fixture the same way)
    "kgc convert --format spert --task RE --input ../shared/data/conll04/conll04_train.spert.json --types ../shared/data/conll04/conll04_types.json --names verbose --detokenize --language en --split-num -1 --output conll04.train.jsonl": STATIC("the CoNLL04 corpus beside the checkout, not in the repository"),
    "kgc convert --task NER --input examples/iepile/NER/sample.json --schema examples/iepile/NER/schema.json --output /tmp/ner.train.jsonl --split-num 6": RUN(),
    # the training itself is minutes on Ray Train; --check validates it with the model built above
    "kgc train --config jobs/configs/ner_lora.yaml model.path=/tmp/tiny-qwen2 data.train_file=/tmp/ner.train.jsonl distributed.use_gpu=false distributed.num_workers=2 distributed.cpus_per_worker=1 model.dtype=fp32 train.max_steps=20": RUN("--check"),
    "kgc export --checkpoint runs/ner-lora-qwen2.5-7b/checkpoint_… --out /tmp/merged": STATIC("a trained checkpoint"),
    "kgc extract --config jobs/configs/extract_ner.yaml [key.sub=value ...]": STATIC(GPU),
    "kgc icl --config jobs/configs/icl_fewshot_re.yaml [key.sub=value ...]": STATIC("an API key (docs/icl.md's replay run is RUN)"),
    "ray job submit --working-dir . -- python -m jobs.icl --config jobs/configs/icl_codekgc.yaml": STATIC(CLUSTER),
    "kgc graph build --config jobs/configs/graph_demo.yaml": RUN("output.path=graph"),
    "kgc pipeline --config jobs/configs/pipeline_demo.yaml": STATIC("the demo oracle on port 18765 and Ray (tests/test_graph_pipeline.py)"),
    "python -m jobs.graph_demo": STATIC("Ray Data (tests/test_graph_pipeline.py)"),
    "kgc graph show --graph out/graph-demo/graph": STATIC("the pipeline's output"),
    "export KGC_API_KEYS=key1,key2": STATIC("sets a variable"),
    """curl -H "Authorization: Bearer key1" 127.0.0.1:8000/v1/extract -d '{"task": "NER", "schema": ["人物", "地点"], "text": "张三在北京。", "model": "kgc:ner"}'""": STATIC(SERVER),
    # docs/graph.md
    "kgc graph export --graph out/graph-demo/graph --formats turtle --namespace http://example.org/kg/": STATIC("the pipeline's output"),
    # docs/icl.md: the replay server stands in for the model; the printed scores are checked
    "python -m tests.support.replay --rules examples/icl/replay_fewshot_re.json --port 8011 &": RUN(),
    "kgc icl --config jobs/configs/icl_fewshot_re.yaml client.base_url=http://127.0.0.1:8011/v1 client.allow_no_key=true output=/tmp/icl/fewshot": RUN("client.cache_dir=cache", output=True),
    "python -m tests.support.replay --rules examples/icl/replay_codekgc.json --port 8012 &": RUN(),
    "kgc icl --config jobs/configs/icl_codekgc.yaml client.base_url=http://127.0.0.1:8012/v1 client.allow_no_key=true output=/tmp/icl/codekgc": RUN("client.cache_dir=cache", output=True),
    # cluster/README.md
    "ray up ray_cluster.yaml": STATIC(CLUSTER + " (AWS)"),
    "ray dashboard ray_cluster.yaml": STATIC(CLUSTER),
    "ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.finetune --config jobs/configs/ner_lora.yaml model.path=/models/Qwen2.5-7B-Instruct": STATIC(CLUSTER),
    "python -m cluster.submit jobs.extract --config jobs/configs/extract_ner.yaml": STATIC(CLUSTER),
    "python -m cluster.submit --env OPENAI_API_KEY jobs.icl --config jobs/configs/icl_llmicl_ner.yaml": STATIC(CLUSTER),
    "python -m cluster.submit jobs.build_graph --config jobs/configs/graph_demo.yaml": STATIC(CLUSTER),
    "python -m cluster.submit jobs.evaluate --config jobs/configs/eval_ner.yaml": STATIC(CLUSTER + " (tests/test_cluster.py runs it on a local head)"),
    "ray down ray_cluster.yaml": STATIC(CLUSTER),
    # docs/cluster.md (Kubernetes)
    'docker build -f cluster/k8s/Dockerfile -t kgc:0.1.0-cpu .': STATIC("Docker and network (tests/test_k8s.py checks the Dockerfile)"),
    'docker build -f cluster/k8s/Dockerfile -t kgc:0.1.0-gpu --build-arg RAY_TAG=2.60.0-py311-gpu --build-arg TORCH_INDEX=https://pypi.org/simple .': STATIC("Docker and network (tests/test_k8s.py checks the Dockerfile)"),
    'helm repo add kuberay https://ray-project.github.io/kuberay-helm/': STATIC(K8S),
    'helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0': STATIC(K8S),
    'kubectl get pods -l app.kubernetes.io/name=kuberay-operator': STATIC(K8S),
    'kubectl apply -f cluster/k8s/storage.yaml -f cluster/k8s/configs.yaml': STATIC(K8S),
    'kubectl apply -f cluster/k8s/raycluster.yaml': STATIC(K8S),
    'kubectl get raycluster kgc': STATIC(K8S),
    'kubectl port-forward svc/kgc-head-svc 8265:8265 &': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayjob-train.yaml': STATIC(K8S),
    'kubectl get rayjob kgc-train': STATIC(K8S),
    'kubectl logs -f job/kgc-train': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayjob-extract.yaml': STATIC(K8S),
    'kubectl get rayjob kgc-extract': STATIC(K8S),
    'kubectl create secret generic kgc-openai --from-literal=api-key=sk-...': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayjob-icl.yaml': STATIC(K8S),
    'kubectl get rayjob kgc-icl': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayjob-graph.yaml': STATIC(K8S),
    'kubectl get rayjob kgc-graph': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayjob-demo.yaml': STATIC(K8S),
    'kubectl get rayjob kgc-demo': STATIC(K8S),
    'kubectl delete rayjob kgc-train': STATIC(K8S),
    'kubectl create secret generic kgc-api-keys --from-literal=keys=key1,key2': STATIC(K8S),
    'kubectl apply -f cluster/k8s/rayservice.yaml': STATIC(K8S),
    'kubectl get rayservice kgc-serve': STATIC(K8S),
    'kubectl port-forward svc/kgc-serve-serve-svc 8000:8000 &': STATIC(K8S),
    'curl http://127.0.0.1:8000/healthz': STATIC(K8S),
    # serve/README.md
    "KGC_API_KEYS=sk-... kgc serve --config serve/config.yaml": STATIC(GPU),
    "KGC_API_KEYS=sk-... serve run serve/config.yaml": STATIC(GPU),
}  # fmt: skip


# ----------------------------------------------------------------------------- extraction
@dataclass
class DocCommand:
    doc: str  # path from the root
    line: int
    text: str  # the table's key
    block: int  # commands of one block share a temp folder
    comment: str | None  # the `# …` line right under it, if any


def _strip_comment(line: str) -> str:
    """The line without its shell comment (an unquoted # at a word's start)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _is_command_block(info: str, lines: list[str]) -> bool:
    if info in SHELL_BLOCKS:
        return True
    first = next((s.strip() for s in lines if s.strip()), "")
    return info == "" and first.split(" ", 1)[0] in PROGRAMS and " " in first


def doc_commands() -> list[DocCommand]:
    out: list[DocCommand] = []
    block_no = 0
    for doc in DOCS:
        rel = doc.relative_to(ROOT).as_posix()
        lines = doc.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^\s*```\s*([\w-]*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            start, j = i + 1, i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body, i = lines[start:j], j + 1
            if not _is_command_block(m.group(1), body):
                continue
            block_no += 1
            k = 0
            while k < len(body):
                first = k
                logical = body[k]
                while logical.rstrip().endswith("\\") and k + 1 < len(body):
                    k += 1
                    logical = logical.rstrip()[:-1] + " " + body[k]
                k += 1
                text = " ".join(_strip_comment(logical).split())
                if not text:
                    continue
                nxt = body[k].strip() if k < len(body) else ""
                comment = nxt[1:].strip() if nxt.startswith("#") else None
                out.append(DocCommand(rel, start + first + 1, text, block_no, comment))
    return out


def _entry_hint(c: DocCommand) -> str:
    return (
        f"{c.doc}:{c.line}: the command {c.text!r} has no entry in COMMANDS "
        "(tests/test_doc_commands.py). Add one saying how it is checked:\n"
        f"    {c.text!r}: RUN(),   # cheap and local: it runs in a temp folder\n"
        f'    {c.text!r}: STATIC("why it cannot run here"),   # GPU, cluster, key, …'
    )


# ----------------------------------------------------------------------------- checks
def _argv(text: str) -> tuple[list[str], bool]:
    """The command's words: synopsis groups (`[key.sub=value ...]`) and leading VAR=value
    assignments dropped; and whether it runs in the background (`&`)."""
    text = re.sub(r"\s\[[^\]]*(\.\.\.|…)[^\]]*\]", "", text)
    words = shlex.split(text)
    background = bool(words) and words[-1] == "&"
    if background:
        words = words[:-1]
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return words, background


def _values(words: list[str]):
    for w in words:
        yield w.split("=", 1)[1] if "=" in w and not w.startswith("-") else w


def _check_repo_files(c: DocCommand, words: list[str]) -> None:
    """Repository files a command names exist (outputs under out/, runs/ are not checked)."""
    for v in _values(words):
        if v.startswith(REPO_DIRS) or v in ("ray_cluster.yaml", "Makefile", "constraints.txt"):
            assert (ROOT / v).exists(), f"{c.doc}:{c.line}: {v} does not exist ({c.text})"


def _load_config(command: list[str], config: str, overrides: list[str]) -> None:
    from kgc.config import EvalConfig, ExtractConfig, FinetuneConfig, load_config
    from kgc.graph.config import GraphConfig, PipelineConfig
    from kgc.icl.config import load_icl_config

    schemas = {
        ("train",): FinetuneConfig,
        ("extract",): ExtractConfig,
        ("eval",): EvalConfig,
        ("graph", "build"): GraphConfig,
        ("pipeline",): PipelineConfig,
    }
    key = tuple(command)
    if key == ("icl",):
        load_icl_config(config, overrides)
    elif key == ("serve",):
        _serve_settings(config)
    else:
        load_config(config, overrides, schema=schemas[key])


def _serve_settings(config: str):
    from kgc.serving import ServeSettings

    conf = yaml.safe_load((ROOT / config).read_text(encoding="utf-8"))
    app = conf["applications"][0]
    assert app["import_path"] == "serve.app:build_app"
    return ServeSettings.model_validate(app["args"])


def _parse_kgc(c: DocCommand, args: list[str]):
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{c.doc}:{c.line}: kgc's argument parser rejects {c.text!r}")


def _static_kgc(c: DocCommand, args: list[str]) -> None:
    ns = _parse_kgc(c, args)
    command = [ns.command] + ([ns.graph_command] if ns.command == "graph" else [])
    if getattr(ns, "config", None):
        _load_config(command, ns.config, list(getattr(ns, "overrides", None) or []))
    if ns.command == "model" and ns.model_command == "prepare" and "/" not in ns.model:
        from kgc.modeling.prepare import KNOWN

        assert ns.model in KNOWN, f"{c.doc}:{c.line}: no known model {ns.model!r}"


def _job_verb(module: str) -> list[str] | None:
    """`python -m jobs.<name>` → the kgc verb it runs (from the module's own source)."""
    src = (ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    m = re.search(r"main\(\[([^*\]]*)\*sys\.argv\[1:\]\]\)", src)
    return [w.strip(" '\"") for w in m.group(1).split(",") if w.strip()] if m else None


def _static_python(c: DocCommand, words: list[str]) -> None:
    assert words[1] == "-m", f"{c.doc}:{c.line}: expected `python -m module`: {c.text}"
    module, rest = words[2], words[3:]
    path = ROOT / module.replace(".", "/")
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (
        f"{c.doc}:{c.line}: no module {module} in the repository ({c.text})"
    )
    if module == "kgc":
        _static_kgc(c, rest)
    elif module == "cluster.submit":
        from cluster.submit import check_job

        job = next(w for w in rest if w.startswith("jobs."))
        job_args = rest[rest.index(job) + 1 :]
        check_job(job, job_args)
        _static_python(c, ["python", "-m", job, *job_args])
    elif module.startswith("jobs."):
        verb = _job_verb(module)
        if verb is not None:
            _static_kgc(c, [*verb, *rest])
        else:
            assert not rest or rest[0].startswith("-") or rest[0] in ("run", "serve"), c.text


def _static(c: DocCommand, words: list[str]) -> None:
    prog = words[0]
    if prog in ("kgc", "ray", "serve"):  # installed command-line programs, next to Python
        assert (Path(sys.executable).parent / prog).exists(), f"{c.doc}:{c.line}: no {prog}"
    if prog == "kgc":
        _static_kgc(c, words[1:])
    elif prog == "python":
        _static_python(c, words)
    elif prog == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"{c.doc}:{c.line}: no Makefile target {words[1]}"
    elif prog == "export":
        assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w) for w in words[1:]), c.text
    elif prog == "serve":
        assert words[1] == "run" and (ROOT / "serve" / "app.py").is_file()
        _serve_settings(words[2])
    elif prog == "ray":
        if words[1:3] == ["job", "submit"]:
            assert "--" in words, f"{c.doc}:{c.line}: ray job submit needs `-- <command>`"
            inner = words[words.index("--") + 1 :]
            opts = words[3 : words.index("--")]
            workdir = opts[opts.index("--working-dir") + 1] if "--working-dir" in opts else None
            assert workdir == ".", (
                f"{c.doc}:{c.line}: ray job submit needs --working-dir . (the repository, "
                f"where the jobs and configs are): {c.text}"
            )
            _static(c, inner)
        else:
            assert words[1] in ("up", "down", "dashboard"), f"{c.doc}:{c.line}: {c.text}"
            cluster = yaml.safe_load((ROOT / words[2]).read_text(encoding="utf-8"))
            assert cluster["cluster_name"] and cluster["available_node_types"]
    elif prog == "curl":
        _static_curl(c, words)
    elif prog in ("kubectl", "docker", "helm"):
        _static_k8s(c, words)
    else:
        pytest.fail(f"{c.doc}:{c.line}: no static check for the program {prog!r}: {c.text}")


def _static_curl(c: DocCommand, words: list[str]) -> None:
    """The route exists in serve/ingress.py (create_api), the body is a valid request for it, the model it
    names is in serve/config.yaml."""
    from kgc.serving import ExtractRequest, split_model_name

    url = next(w for w in words[1:] if re.match(r"(https?://)?127\.0\.0\.1:\d+/", w))
    route = "/" + url.split("/", 3 if url.startswith("http") else 1)[-1]
    routes = (ROOT / "serve" / "ingress.py").read_text(encoding="utf-8")
    assert f'"{route}"' in routes, f"{c.doc}:{c.line}: serve/ingress.py has no route {route}"
    if "-d" not in words:
        return
    body = json.loads(words[words.index("-d") + 1])
    if route == "/v1/extract":
        req = ExtractRequest.model_validate(body)
        split_model_name(req.model, _serve_settings("serve/config.yaml"))


def _static_k8s(c: DocCommand, words: list[str]) -> None:
    """docs/cluster.md's Kubernetes lines: the manifests, resources, Secrets, Services and
    build arguments they name are those of cluster/k8s/ (tests/test_k8s.py checks those)."""
    from test_k8s import K8S, documents

    docs = documents()
    named = {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}
    where = f"{c.doc}:{c.line}: {c.text}"
    prog, verb = words[0], words[1]
    if prog == "helm":
        assert verb in ("repo", "install") and "kuberay" in c.text, where
        if verb == "install":  # the operator whose CRDs the manifests are checked against
            assert words[words.index("--version") + 1].startswith("1.7."), where
    elif prog == "docker":
        assert verb == "build" and words[-1] == ".", where
        dockerfile = ROOT / words[words.index("-f") + 1]
        assert dockerfile == K8S / "Dockerfile", where
        declared = re.findall(r"^ARG (\w+)", dockerfile.read_text("utf-8"), re.M)
        for i, w in enumerate(words):
            if w == "--build-arg":
                assert words[i + 1].split("=")[0] in declared, where
    elif verb == "apply":
        files = [words[i + 1] for i, w in enumerate(words) if w == "-f"]
        assert files and all((ROOT / f).is_file() and f.startswith("cluster/k8s/") for f in files)
    elif verb in ("get", "delete") and words[2] in ("rayjob", "raycluster", "rayservice"):
        assert (words[2], words[3]) in named, f"{where}: no such {words[2]} in cluster/k8s/"
    elif verb == "get":
        assert words[2] == "pods", where
    elif verb == "logs":
        job = words[-1].removeprefix("job/")  # KubeRay's submitter Job has the RayJob's name
        assert ("rayjob", job) in named, where
    elif verb == "create":
        assert words[2:4] == ["secret", "generic"], where
        name, literal = words[4], words[5].removeprefix("--from-literal=").split("=")[0]
        refs = re.findall(r"secretKeyRef: \{name: ([\w-]+), key: ([\w-]+)\}", _k8s_text())
        assert (name, literal) in refs, f"{where}: no manifest reads {name}/{literal}"
    elif verb == "port-forward":
        svc = words[2].removeprefix("svc/")
        services = {f"{n}-head-svc" for k, n in named if k == "raycluster"}
        services |= {f"{n}-serve-svc" for k, n in named if k == "rayservice"}
        assert svc in services, f"{where}: KubeRay names its Services {sorted(services)}"
    else:
        pytest.fail(f"{where}: no static check for kubectl {verb}")


def _k8s_text() -> str:
    return "".join(p.read_text("utf-8") for p in sorted((ROOT / "cluster" / "k8s").glob("*.yaml")))


class BlockRun:
    """The RUN commands of one block: one temp folder, replay servers by documented port."""

    def __init__(self, tmp: Path, stack: contextlib.ExitStack):
        self.tmp, self.stack, self.ports = tmp, stack, {}

    def rewrite(self, value: str) -> str:
        for doc_port, real in self.ports.items():
            value = value.replace(f"127.0.0.1:{doc_port}", f"127.0.0.1:{real}")
        if value.startswith("/tmp/"):
            return str(self.tmp / value[len("/tmp/") :])
        is_path = not value.startswith("-") and "/" in value and "://" not in value
        return str(ROOT / value) if is_path and (ROOT / value).exists() else value

    def args(self, words: list[str]) -> list[str]:
        out = []
        for w in words:
            if "=" in w and not w.startswith("-"):
                k, v = w.split("=", 1)
                out.append(f"{k}={self.rewrite(v)}")
            else:
                out.append(self.rewrite(w))
        return out

    def run(self, c: DocCommand, check: Check, words: list[str], background: bool, mp) -> None:
        for name, src in check.setup.items():
            shutil.copy(ROOT / src, self.tmp / name)
        if words[:3] == ["python", "-m", "tests.support.replay"]:
            assert background, f"{c.doc}:{c.line}: the replay server runs in the background (&)"
            from tests.support.replay import ReplayServer, load_rules

            opts = dict(zip(words[3::2], words[4::2], strict=True))
            rules, default = load_rules(str(ROOT / opts["--rules"]))
            srv = self.stack.enter_context(ReplayServer(rules, default=default))
            self.ports[opts["--port"]] = srv.base_url.split(":")[-1].split("/")[0]
            return
        if words[:3] == ["python", "-m", "kgc"]:
            words = ["kgc", *words[3:]]
        elif words[:2] == ["python", "-m"] and words[2].startswith("jobs."):
            words = ["kgc", *(_job_verb(words[2]) or []), *words[3:]]
        assert words[0] == "kgc", f"{c.doc}:{c.line}: RUN supports kgc commands: {c.text}"
        argv = self.args(words[1:]) + list(check.extra)
        mp.chdir(self.tmp)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert code == 0, f"{c.doc}:{c.line}: {c.text}\nexit {code}\n{err.getvalue()[-3000:]}"
        if check.output:
            assert c.comment, f"{c.doc}:{c.line}: output=True but no `# …` line under it"
            want = c.comment.split("…")[0].strip()
            printed = out.getvalue() + err.getvalue()
            assert want in printed, f"{c.doc}:{c.line}: the doc says {want!r}; printed:\n{printed}"


# ----------------------------------------------------------------------------- tests
def test_every_documented_command_has_an_entry():
    found = doc_commands()
    assert len(found) >= 30, [c.text for c in found]
    missing = [_entry_hint(c) for c in found if c.text not in COMMANDS]
    assert not missing, "\n\n".join(missing)
    stale = sorted(set(COMMANDS) - {c.text for c in found})
    assert not stale, f"COMMANDS entries no doc has any more (remove them): {stale}"


def test_extraction_joins_lines_and_drops_comments():
    assert _strip_comment("kgc eval --x a   # note") == "kgc eval --x a   "
    assert _strip_comment("""curl -d '{"a": "#1"}' # c""") == """curl -d '{"a": "#1"}' """
    assert _argv("kgc extract --config c.yaml [key.sub=value ...]") == (
        ["kgc", "extract", "--config", "c.yaml"],
        False,
    )
    assert _argv("A=1 B=x kgc serve &") == (["kgc", "serve"], True)
    assert not _is_command_block("", ["entry     kgc/cli.py"])
    assert _is_command_block("", ["kgc --help"]) and not _is_command_block("yaml", ["kgc x"])


@pytest.mark.parametrize(
    "words, error, match",
    [
        ("kgc trian --config jobs/configs/ner_lora.yaml", pytest.fail.Exception, "rejects"),
        ("kgc eval --task NER --input p.jsonl --bogus", pytest.fail.Exception, "rejects"),
        ("kgc train --config jobs/configs/ner_lora.yaml train.lr=0", KgcError, "train.lr"),
        ("kgc graph build --config jobs/configs/graph_demo.yaml bogus=1", KgcError, "bogus"),
        ("kgc icl --config jobs/configs/icl_codekgc.yaml mode=nope", KgcError, "mode"),
        ("python -m jobs.nope", AssertionError, "no module jobs.nope"),
        ("python -m jobs.evaluate --config jobs/configs/eval_ner.yaml by_source=maybe", KgcError, "by_source"),
        ("python -m cluster.submit jobs.extract --config jobs/configs/no.yaml", SystemExit, "does not exist"),
        ("python -m cluster.submit jobs.nope --config jobs/configs/eval_ner.yaml", SystemExit, "unknown job"),
        ("make nope", AssertionError, "no Makefile target"),
        ("ray job submit -- python -m jobs.icl", AssertionError, "--working-dir"),
        ("ray job submit --working-dir . -- python -m jobs.nope", AssertionError, "no module"),
        ("kgc model prepare nope-model", AssertionError, "no known model"),
        ("serve run serve/nope.yaml", FileNotFoundError, "nope.yaml"),
        ("""curl 127.0.0.1:8000/v1/extract -d '{"task": "NER"}'""", ValidationError, "schema"),
        ("""curl 127.0.0.1:8000/v1/nope -d '{}'""", AssertionError, "no route /v1/nope"),
        ("frobnicate --now", pytest.fail.Exception, "no static check"),
    ],
)  # fmt: skip
def test_static_checks_catch_what_they_check(words, error, match, monkeypatch):
    """Each static check fails on what it is there to catch (so a pass means something)."""
    monkeypatch.chdir(ROOT)
    c = DocCommand("X.md", 1, words, 0, None)
    with pytest.raises(error, match=re.escape(match)):
        _static(c, _argv(words)[0])


def test_repository_files_named_must_exist():
    c = DocCommand("X.md", 1, "", 0, None)
    _check_repo_files(c, ["kgc", "convert", "--input", "examples/iepile/NER/sample.json"])
    with pytest.raises(AssertionError, match="examples/nope.json does not exist"):
        _check_repo_files(c, ["kgc", "convert", "--input", "examples/nope.json"])
    with pytest.raises(AssertionError, match="jobs/configs/nope.yaml does not exist"):
        _check_repo_files(c, ["kgc", "icl", "--config=x", "input=jobs/configs/nope.yaml"])


def _blocks():
    by_block: dict[int, list[DocCommand]] = {}
    for c in doc_commands():
        by_block.setdefault(c.block, []).append(c)
    return list(by_block.values())


@pytest.mark.parametrize(
    "block", _blocks(), ids=lambda b: f"{b[0].doc}:{b[0].line}".replace("/", "_")
)
def test_documented_commands(block, tmp_path, monkeypatch):
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "kgc-home"))  # `kgc model list`: no cache
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with contextlib.ExitStack() as stack:
        runner = BlockRun(tmp_path, stack)
        for c in block:
            check = COMMANDS.get(c.text)
            if check is None:
                pytest.fail(_entry_hint(c))
            words, background = _argv(c.text)
            _check_repo_files(c, words)
            if check.how == "run":
                runner.run(c, check, words, background, monkeypatch)
            else:
                assert check.why, f"{c.text}: STATIC needs a reason"
                monkeypatch.chdir(ROOT)  # the docs' commands run from the repository root
                _static(c, words)
