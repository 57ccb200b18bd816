"""The ingress's calls to the model deployment: awaited together, cancelled together (a
refusal or a client that left), a lost replica as a 503 with Retry-After (never a 500).
"""

import asyncio
import contextlib

from fastapi import HTTPException


def replica_lost(exc: BaseException) -> bool:
    """The model replica died or became unreachable while holding the request."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))


async def gather_or_cancel(responses: list, check=None) -> list:
    """Await Serve responses together; if one fails (or `check` raises on its result) or
    this request is cancelled (the client went away), cancel the rest at once so no
    orphaned model calls keep running."""

    async def one(response):
        result = await response
        if check is not None:
            check(result)
        return result

    tasks = [asyncio.ensure_future(one(r)) for r in responses]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t, r in zip(tasks, responses):
            t.cancel()
            with contextlib.suppress(Exception):
                r.cancel()
        raise


def _refused(result: dict) -> None:
    """A model call's refusal (its 4xx) as the request's: the request's other calls are
    cancelled, not decoded for nothing."""
    if "error" in result:
        raise HTTPException(result["status"], result["error"])


async def call_model(model, calls: list[tuple], retry_after_s: int) -> list[dict]:
    """Model calls (adapter, prompt, max_new, schema) on the ModelDeployment handle → their
    results ({"text", "prompt_tokens", "completion_tokens"}); an item's failure → its 4xx;
    a lost replica → 503 with Retry-After (never a 500)."""
    try:
        return await gather_or_cancel([model.generate.remote(*c) for c in calls], _refused)
    except Exception as exc:
        if replica_lost(exc):
            raise HTTPException(
                503,
                "the model replica was lost; retry shortly",
                headers={"Retry-After": str(max(retry_after_s, 1))},
            ) from None
        raise
