"""cluster/k8s/: the KubeRay manifests against KubeRay's own CRD schemas (v1.7), the jobs and
configs they name, the Serve config they deploy, and the image they run (Dockerfile).

The CRDs are not copied into this repository (3 MB): they are read from
`../shared/reference/kuberay/` beside the checkout, or from $KGC_KUBERAY_CRDS; the schema
tests skip, saying so, when neither exists. The other checks need no CRD."""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "cluster" / "k8s"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
# the one job module each RayJob runs (python -m jobs.<module>)
JOB_MODULES = {
    "kgc-train": "finetune",
    "kgc-extract": "extract",
    "kgc-icl": "icl",
    "kgc-graph": "build_graph",
    "kgc-demo": "demo",
}
# where the RayService's Serve config may differ from serve/config.yaml, and to what: the
# pod network behind a Service (not loopback), a proxy on each pod (the workers' readiness
# probe goes through it), the model replica on a GPU pod
K8S_DIFFERENCES = {
    ("proxy_location",): "EveryNode",
    ("http_options", "host"): "0.0.0.0",
    ("applications", 0, "args", "replica_gpus"): 1,
}


def crd_dir() -> Path:
    env = os.environ.get("KGC_KUBERAY_CRDS")
    return Path(env) if env else ROOT.parent / "shared" / "reference" / "kuberay"


def documents() -> list[dict]:
    """Every document of every manifest under cluster/k8s/, with its file name (a fresh
    copy: tests mutate them)."""
    return copy.deepcopy(_documents())


@functools.cache
def _documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append(dict(doc, _file=path.name))
    return docs


def of_kind(kind: str) -> list[dict]:
    return [d for d in documents() if d["kind"] == kind]


def cluster_spec(doc: dict) -> dict:
    """The RayCluster spec of a RayCluster, RayJob or RayService."""
    return {
        "RayCluster": lambda: doc["spec"],
        "RayJob": lambda: doc["spec"]["rayClusterSpec"],
        "RayService": lambda: doc["spec"]["rayClusterConfig"],
    }[doc["kind"]]()


def pod_specs(spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, g.get("template", {}).get("spec", {})) for name, g in groups]


# ----------------------------------------------------------------------------- validation
def strict(schema):
    """The CRD's openAPIV3Schema as a JSON schema that rejects unknown fields.

    The API server prunes an unknown field of a structural CRD schema (it is dropped,
    silently, not refused), so a misspelt `minReplica` would be applied as if absent; plain
    JSON-schema validation would accept it too (additionalProperties defaults to true). To
    catch it, every object that lists `properties` gets `additionalProperties: false`, except
    where the CRD keeps unknown fields (`x-kubernetes-preserve-unknown-fields`, which the API
    server does not prune) or already says what extra keys may be (maps: rayStartParams,
    resources.limits). `x-kubernetes-int-or-string` (ports, quantities) becomes integer or
    string where the CRD does not spell out the anyOf. Not checked: the CRD's CEL rules
    (`x-kubernetes-validations`) and list-map key uniqueness, which the API server checks."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


_VALIDATORS: dict[str, object] = {}


def validator(kind: str):
    if kind not in _VALIDATORS:
        from jsonschema import Draft7Validator

        path = crd_dir() / CRD_FILES[kind]
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 3 MB of YAML: C if there
        crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        _VALIDATORS[kind] = Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))
    return _VALIDATORS[kind]


def problems(doc: dict) -> list[str]:
    """What is wrong with a KubeRay manifest, each as `<path>: <message>`: the CRD schema
    (strict, above), then what the schema leaves optional but a Ray pod needs."""
    doc = {k: v for k, v in doc.items() if k != "_file"}
    out = []
    for err in sorted(validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{where}: {err.message}")
    if out:
        return out
    spec = cluster_spec(doc)
    for group, pod in pod_specs(spec):
        containers = pod.get("containers") or []
        if not containers:
            out.append(f"{group}: template.spec.containers: no container")
        for i, c in enumerate(containers):
            if not c.get("image"):
                out.append(f"{group}: containers.{i} ({c.get('name')}): no image")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in containers:
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    out.append(f"{group}: volumeMounts {m['name']!r}: no such volume in the pod")
    return out


@pytest.fixture(scope="module")
def crds():
    d = crd_dir()
    if not all((d / f).is_file() for f in CRD_FILES.values()):
        pytest.skip(
            f"KubeRay CRDs not found in {d} (ray.io_rayclusters/rayjobs/rayservices.yaml): "
            "put KubeRay v1.7's ray-operator/config/crd/bases there or set KGC_KUBERAY_CRDS"
        )
    return d


KUBERAY = [d for d in documents() if d["apiVersion"].startswith("ray.io/")]


@pytest.mark.parametrize(
    "doc", KUBERAY, ids=lambda d: f"{d['_file']}:{d['kind']}/{d['metadata']['name']}"
)
def test_manifest_validates_against_the_crd(crds, doc):
    found = problems(doc)
    assert not found, f"{doc['_file']}:\n" + "\n".join(found)


def test_every_kind_and_job_is_there():
    kinds = [d["kind"] for d in KUBERAY]
    assert kinds.count("RayCluster") == 1 and kinds.count("RayService") == 1
    assert {d["metadata"]["name"] for d in of_kind("RayJob")} == set(JOB_MODULES)


def _raycluster() -> dict:
    (rc,) = of_kind("RayCluster")
    return copy.deepcopy(rc)


def _group(doc: dict, name: str) -> dict:
    return next(g for g in cluster_spec(doc)["workerGroupSpecs"] if g["groupName"] == name)


def _container(doc: dict, group: str) -> dict:
    spec = cluster_spec(doc)
    g = spec["headGroupSpec"] if group == "head" else _group(doc, group)
    return g["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    "mutate, named",
    [
        # a misspelt field (the API server would drop it): named with its place
        (lambda d: _group(d, "gpu-1x").update(minReplica=0), "minReplica"),
        (lambda d: _container(d, "head").update(imagePullPolicyy="Always"), "imagePullPolicyy"),
        (lambda d: d["spec"].update(enableInTreeAutoScaling=True), "enableInTreeAutoScaling"),
        (
            lambda d: d["spec"]["autoscalerOptions"].update(idleTimeoutSecond=60),
            "idleTimeoutSecond",
        ),
        # a missing container, a container without a name or image
        (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"].pop("containers"), "containers"),
        (lambda d: _group(d, "cpu")["template"]["spec"].update(containers=[]), "containers"),
        (lambda d: _container(d, "gpu-1x").pop("name"), "'name' is a required property"),
        (lambda d: _container(d, "cpu").pop("image"), "ray-worker): no image"),
        # wrong types and a mount without its volume
        (lambda d: _group(d, "gpu-1x").update(maxReplicas="four"), "maxReplicas"),
        (lambda d: _container(d, "head")["resources"]["limits"].update(cpu=[8]), "limits.cpu"),
        (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"].pop("volumes"), "'data'"),
    ],
)
def test_a_broken_manifest_fails_naming_the_field(crds, mutate, named):
    doc = _raycluster()
    assert problems(doc) == []
    mutate(doc)
    found = problems(doc)
    assert found, "the broken manifest passed"
    assert any(named in p for p in found), found


def test_a_broken_rayjob_and_rayservice_fail_naming_the_field(crds):
    job = copy.deepcopy(of_kind("RayJob")[0])
    job["spec"]["shutdownAfterJobFinish"] = True
    assert any(p.startswith("spec:") and "shutdownAfterJobFinish'" in p for p in problems(job))
    svc = copy.deepcopy(of_kind("RayService")[0])
    svc["spec"]["upgradeStrategy"]["typ"] = "NewCluster"
    assert any("spec.upgradeStrategy" in p and "'typ'" in p for p in problems(svc))


# ----------------------------------------------------------------------------- the cluster
def _without_workload_extras(spec: dict) -> dict:
    """A workload's cluster spec less what it adds to raycluster.yaml's: env vars from a
    Secret (each workload its own keys) and readiness probes (the RayService's)."""
    spec = copy.deepcopy(spec)
    for _, pod in pod_specs(spec):
        for c in pod.get("containers", []):
            env = [e for e in c.get("env", []) if "secretKeyRef" not in e.get("valueFrom", {})]
            c.pop("env", None)
            if env:
                c["env"] = env
            c.pop("readinessProbe", None)
    return spec


@pytest.mark.parametrize(
    "doc",
    [d for d in KUBERAY if d["kind"] != "RayCluster"],
    ids=lambda d: d["metadata"]["name"],
)
def test_each_workload_runs_raycluster_yaml(doc):
    want = _raycluster()["spec"]
    assert _without_workload_extras(cluster_spec(doc)) == want, (
        f"{doc['_file']}: its cluster spec is not raycluster.yaml's; copy the spec over"
    )


def test_raycluster_cpu_head_autoscaled_cpu_and_gpu_groups():
    rc = _raycluster()
    spec = rc["spec"]
    head = _container(rc, "head")
    assert "nvidia.com/gpu" not in head["resources"]["limits"], "no GPUs on the head"
    assert spec["enableInTreeAutoscaling"] is True
    vm = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text(encoding="utf-8"))
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == vm["idle_timeout_minutes"] * 60
    cpu, gpu = _group(rc, "cpu"), _group(rc, "gpu-1x")
    assert "nvidia.com/gpu" not in _container(rc, "cpu")["resources"]["limits"]
    assert _container(rc, "gpu-1x")["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0, "GPUs scale to zero"
    for g in (cpu, gpu):
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] > 0
    import ray

    assert spec["rayVersion"] == ray.__version__, "rayVersion = the Ray kgc pins"
    for _, pod in pod_specs(spec):
        for c in pod["containers"]:
            assert c["name"] and c["image"].startswith("kgc:"), c
            gpu_pod = "nvidia.com/gpu" in c["resources"]["limits"]
            assert c["image"].endswith("-gpu" if gpu_pod else "-cpu"), c["image"]


def test_volumes_name_what_the_manifests_define():
    claims = {d["metadata"]["name"] for d in of_kind("PersistentVolumeClaim")}
    maps = {d["metadata"]["name"] for d in of_kind("ConfigMap")}
    assert claims == {"kgc-data", "kgc-models"}
    for doc in KUBERAY:
        for group, pod in pod_specs(cluster_spec(doc)):
            for v in pod.get("volumes", []):
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims, (doc["_file"], v)
                if "configMap" in v:
                    assert v["configMap"]["name"] in maps, (doc["_file"], v)
            mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
            assert {"/data", "/models"} <= mounts, (doc["_file"], group)


# ----------------------------------------------------------------------------- the jobs
def _config_map() -> dict[str, str]:
    (cm,) = of_kind("ConfigMap")
    return cm["data"]


def _entry(job: dict) -> tuple[str, list[str]]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"], argv
    return argv[2], argv[3:]


def test_each_rayjob_names_a_job_that_exists_and_says_how_it_ends():
    sys.path.insert(0, str(ROOT))
    from cluster.submit import JOBS

    for job in of_kind("RayJob"):
        name = job["metadata"]["name"]
        module, args = _entry(job)
        assert module == f"jobs.{JOB_MODULES[name]}" and module.removeprefix("jobs.") in JOBS
        assert job["spec"]["shutdownAfterJobFinishes"] is True, name
        assert isinstance(job["spec"]["backoffLimit"], int), name
        if module == "jobs.demo":  # flags, no config file: each one jobs/demo.py takes
            demo = (ROOT / "jobs" / "demo.py").read_text(encoding="utf-8")
            for flag in (a for a in args if a.startswith("--")):
                assert f'add_argument(\n        "{flag}"' in demo or f'"{flag}"' in demo, flag
            continue
        assert args[0] == "--config", args
        head = cluster_spec(job)["headGroupSpec"]["template"]["spec"]
        mount = next(
            m["mountPath"]
            for m in head["containers"][0]["volumeMounts"]
            if next(v for v in head["volumes"] if v["name"] == m["name"]).get("configMap")
        )
        path = Path(args[1])
        assert str(path.parent) == mount, f"{name}: --config {path} is not on the ConfigMap"
        assert path.name in _config_map(), f"{name}: configs.yaml has no key {path.name}"


@pytest.fixture
def job_configs(tmp_path) -> dict[str, Path]:
    out = {}
    for key, text in _config_map().items():
        out[key] = tmp_path / key
        out[key].write_text(text, encoding="utf-8")
    return out


def test_the_train_config_passes_kgc_train_check(job_configs, tiny_llama, ner_train_file, tmp_path):
    """`kgc train --check` on the ConfigMap's train.yaml; the model and the data live on the
    cluster's volumes, so the tiny model and the test data stand in for them."""
    pytest.importorskip("transformers")
    from kgc.cli import main

    over = [f"model.path={tiny_llama}", f"data.train_file={ner_train_file}"]
    over.append(f"run.storage_path={tmp_path / 'runs'}")
    assert main(["train", "--config", str(job_configs["train.yaml"]), "--check", *over]) == 0


def test_the_other_configs_pass_their_jobs_loaders(job_configs):
    from kgc.config import ExtractConfig, load_config
    from kgc.graph.config import GraphConfig
    from kgc.icl.config import load_icl_config

    cfg = load_config(job_configs["extract.yaml"], [], schema=ExtractConfig)
    assert cfg.workers.gpus_per_actor >= 1 and cfg.output.path.startswith("/data/")
    graph = load_config(job_configs["graph.yaml"], [], schema=GraphConfig)
    assert graph.input.paths == [cfg.output.path], "the graph is built from the extraction"
    icl = load_icl_config(job_configs["icl.yaml"], [])
    (job,) = [j for j in of_kind("RayJob") if j["metadata"]["name"] == "kgc-icl"]
    env = _container(job, "head")["env"]
    assert [e["name"] for e in env] == [icl.client.api_key_env], "the key comes from a Secret"


def test_config_paths_are_absolute_and_in_the_image(job_configs):
    """A relative path in a config is read from the config's folder (/etc/kgc here), so the
    ConfigMap's paths are absolute: on the volumes (/data, /models) or in the image, where
    they must be files the Dockerfile copies."""
    copied = [src for src, _ in _dockerfile_copies()]
    for key, text in _config_map().items():
        for path in re.findall(r"(?<![\w:/])(/[\w./-]+)", text):
            root = path.split("/")[1]
            assert root in {"data", "models", "etc", "home"}, f"{key}: {path}"
            if path.startswith("/home/ray/kgc/"):
                inner = path.removeprefix("/home/ray/kgc/")
                assert (ROOT / inner).exists(), f"{key}: {path}: not in the repository"
                assert any(inner.startswith(s.rstrip("/")) for s in copied), f"{key}: {path}"
    for key in ("train.yaml", "extract.yaml", "graph.yaml"):
        assert "../" not in _config_map()[key], key


def test_a_uri_storage_path_is_refused_naming_the_key():
    """docs/cluster.md: run.storage_path must be a mounted folder; s3://… used to become a
    local folder named 's3:' on each node."""
    from kgc.config import load_config
    from kgc.errors import KgcError

    with pytest.raises(KgcError, match=r"run\.storage_path.*is a URI.*/data/runs"):
        load_config(
            None,
            [],
            data={
                "model": {"path": "m"},
                "data": {"train_file": "t"},
                "run": {"storage_path": "s3://bucket/runs"},
            },
        )
    ok = load_config(
        None,
        ["run.storage_path=/data/runs"],
        data={"model": {"path": "m"}, "data": {"train_file": "t"}},
    )
    assert ok.run.storage_path == "/data/runs"


# ----------------------------------------------------------------------------- serving
def _serve_config(svc: dict) -> dict:
    return yaml.safe_load(svc["spec"]["serveConfigV2"])


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def test_the_rayservice_serves_serve_config_yaml():
    (svc,) = of_kind("RayService")
    got = _serve_config(svc)
    local = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text(encoding="utf-8"))
    for path, value in K8S_DIFFERENCES.items():
        assert _get(got, path) == value, path
        *parent, last = path
        _get(got, parent).pop(last)
        _get(local, parent).pop(last, None)
    assert got == local, "serveConfigV2 differs from serve/config.yaml beyond K8S_DIFFERENCES"
    from ray.serve.schema import ServeDeploySchema

    from kgc.serving import ServeSettings

    full = _serve_config(svc)
    ServeDeploySchema.model_validate(full)  # Ray's own schema of a Serve config
    ServeSettings.model_validate(full["applications"][0]["args"])


def test_the_rayservice_keys_readiness_and_upgrades():
    (svc,) = of_kind("RayService")
    assert svc["spec"]["upgradeStrategy"]["type"] in {
        "NewCluster",
        "NewClusterWithIncrementalUpgrade",
    }
    key_var = _serve_config(svc)["applications"][0]["args"]["api_keys_env"]
    routes = (ROOT / "serve" / "ingress.py").read_text(encoding="utf-8")  # create_api
    for group, pod in pod_specs(cluster_spec(svc)):
        for c in pod["containers"]:
            (env,) = [e for e in c["env"] if e["name"] == key_var]
            assert env["valueFrom"]["secretKeyRef"]["name"] == "kgc-api-keys", group
            if group == "head":
                assert "readinessProbe" not in c, "KubeRay deploys the app once the head is ready"
                continue
            probe = c["readinessProbe"]["httpGet"]
            assert probe["port"] == _serve_config(svc)["http_options"]["port"]
            assert f'api.get("{probe["path"]}")' in routes, (
                f"serve/ingress.py has no {probe['path']}"
            )
        for c in pod["containers"]:  # no key written in a manifest
            assert all("valueFrom" in e and "value" not in e for e in c["env"]), group


# ----------------------------------------------------------------------------- the image
def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of cluster/k8s/Dockerfile, continuation lines joined."""
    text = (K8S / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_copies() -> list[tuple[str, str]]:
    out = []
    for word, rest in _dockerfile():
        if word in ("COPY", "ADD"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            out += [(src, parts[-1]) for src in parts[:-1]]
    return out


def test_dockerfile_base_pins_and_copies():
    steps = _dockerfile()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    (base,) = [rest for word, rest in steps if word == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    import ray

    assert image == f"rayproject/ray:{ray.__version__}-py311", image
    assert image.startswith(f"rayproject/ray:{_raycluster()['spec']['rayVersion']}-")
    # the GPU variant it documents is ray_cluster.yaml's image
    vm = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text(encoding="utf-8"))
    gpu_tag = vm["docker"]["image"].split(":", 1)[1]
    assert f"--build-arg RAY_TAG={gpu_tag}" in (K8S / "Dockerfile").read_text("utf-8")
    # torch is constraints.txt's pin; kgc installs under the constraints
    pins = re.findall(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text("utf-8"), re.M)
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert re.findall(r"torch==([\w.]+)", runs) == pins
    assert "PIP_CONSTRAINT=/home/ray/kgc/constraints.txt" in runs
    # every COPY source is in the repository, and what a job or Serve imports is copied
    copies = _dockerfile_copies()
    for src, _ in copies:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert {"kgc/", "jobs/", "serve/", "pyproject.toml", "constraints.txt"} <= {
        s for s, _ in copies
    }
    # no model in the image: no weights copied, the ignore file leaves them behind
    ignore = (K8S / "Dockerfile.dockerignore").read_text("utf-8").split()
    assert {".venv/", ".git/", "runs/", "*.safetensors", "*.gguf"} <= set(ignore)
