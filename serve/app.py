"""Ray Serve application: the IE task API and an OpenAI-compatible API over kgc extractors.

    serve run serve/config.yaml            # or: kgc serve --config serve/config.yaml
    python -c "from serve.app import build_app"

Endpoints: POST /v1/extract, POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
GET /healthz, OpenAPI docs at /docs. One `ModelDeployment` holds the base model and its LoRA
adapters (chosen per request by model name `base:adapter`, loaded lazily, LRU-bounded) and
batches concurrent requests; the `Ingress` deployment is the FastAPI ingress (auth, limits,
schema splitting, parsing). This module is the entry (`serve.app:build_app`): the settings
resolved once, both deployments bound with their Serve options. The rest, by concern:

    kgc/serving.py      settings, request models and their checks (pure Python, no Ray)
    serve/model.py      ModelServer (the replica without Ray) + ModelDeployment
    serve/ingress.py    IngressServer (the HTTP side without Ray) + create_api (routes) + Ingress
    serve/calls.py      the ingress's calls to the model deployment (cancel together, 503s)
    serve/responses.py  the OpenAI wire shapes: error bodies, SSE chunks, usage

Each deployment is a plain class plus its Serve wiring: `ModelServer` (an engine, given or
built from the settings) and `IngressServer` + `create_api` (the routes over any object whose
`.generate.remote(...)` is awaitable) run without Ray, so tests drive them with a fake engine.
"""

from typing import Any

from ray.serve.config import BackpressureConfig

from kgc.serving import ServeSettings, api_keys, check_engine, key_hash
from serve.ingress import Ingress
from serve.model import ModelDeployment


def resolved_settings(args: dict) -> dict:
    """The settings, validated, with `model` as a local HF folder: a .gguf file or a prepared
    model's name is prepared once here, before any replica starts."""
    settings = ServeSettings.model_validate(args).model_dump(mode="json")
    if settings.get("model") and settings.get("engine", "hf") in ("hf", "vllm"):
        from kgc.modeling.prepare import resolve_model_path

        settings["model"] = resolve_model_path(settings["model"])
    return settings


def build_app(args: dict) -> Any:
    """`serve run serve/config.yaml` entry: args are ServeSettings fields."""
    settings = resolved_settings(args)
    s = ServeSettings.model_validate(settings)
    check_engine(s)  # before any replica starts
    actor: dict[str, Any] = {"num_cpus": s.replica_cpus}
    model_actor = dict(actor, num_gpus=s.replica_gpus) if s.replica_gpus else actor
    # keys set where `serve run` (or build_app) runs reach the replicas as sha256 hashes
    # (replicas do not inherit this environment; Ray's dashboard shows deployment arguments)
    hashes = sorted(set(s.api_key_sha256) | {key_hash(k) for k in api_keys(s.api_keys_env)})
    settings["api_key_sha256"] = hashes
    # Overload: a request beyond a deployment's running + queued limits is rejected by Serve
    # with 429 and Retry-After (never a crash or a 5xx). The ingress only awaits the model,
    # so it admits as many requests as the model can hold; the model's queue is the limit.
    busy = BackpressureConfig(status_code=429, retry_after_s=s.retry_after_s)
    room = s.max_ongoing_requests + max(s.max_queued_requests, 0)
    api_opts = dict(
        max_ongoing_requests=room + 16,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=busy,
        ray_actor_options=actor,
    )
    gen_opts: dict[str, Any] = dict(
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=busy,
        ray_actor_options=model_actor,
    )
    if s.autoscaling is not None:
        gen_opts["autoscaling_config"] = s.autoscaling.model_dump()
    else:
        gen_opts["num_replicas"] = s.num_replicas
    model = ModelDeployment.options(**gen_opts).bind(settings)
    return Ingress.options(**api_opts).bind(model, settings)
