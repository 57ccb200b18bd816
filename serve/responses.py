"""The OpenAI wire shapes the ingress answers with: error bodies (a 4xx naming the field),
server-sent event chunks of a streamed answer, `usage` and `finish_reason`.
"""

import contextlib
import json

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kgc.engine import StopCutter
from kgc.serving import validation_fields
from serve.calls import replica_lost


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


def invalid_response(exc: ValidationError) -> JSONResponse:
    """A malformed OpenAI request: 422 naming the first bad field, and every bad field."""
    fields = validation_fields(exc)
    first = fields[0]
    return error_response(
        422, f"{first['field']}: {first['message']}", field=first["field"], fields=fields
    )


def _chunk(head: dict, delta: dict, finish: str | None = None) -> str:
    """One server-sent event: a chat-completion chunk, or, when `head` is a text
    completion's, a text-completion chunk (`delta`'s content as its text)."""
    if head.get("object") == "text_completion":
        choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None}
        chunk = {**head, "choices": [{**choice, "finish_reason": finish}]}
    else:
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


async def sse(head: dict, first: str, rest, stop: list[str]):
    """`stream: true`: the answer as OpenAI chat-completion chunks (server-sent events), a
    chunk per piece the model replica sends (token by token on the HF engine), cut at the
    request's stop strings. A failure after the first chunk ends the stream with an error
    event (the status line has been sent)."""
    cutter = StopCutter(stop)
    if head.get("object") != "text_completion":
        yield _chunk(head, {"role": "assistant", "content": ""})
    piece = cutter.push(first)
    if piece:
        yield _chunk(head, {"content": piece})
    try:
        async for item in rest:
            if "error" in item:
                yield f"data: {json.dumps({'error': {'message': item['error']}})}\n\n"
                return
            piece = cutter.push(item["text"])
            if piece:
                yield _chunk(head, {"content": piece})
            if cutter.done:
                break
    except Exception as exc:  # the replica went away mid-answer
        message = "the model replica was lost" if replica_lost(exc) else str(exc)
        yield f"data: {json.dumps({'error': {'message': message}})}\n\n"
        return
    finally:  # the client left, a stop string, or the end: no orphaned generation
        with contextlib.suppress(Exception):
            if hasattr(rest, "cancel"):
                rest.cancel()
            elif hasattr(rest, "aclose"):
                await rest.aclose()
    piece = cutter.finish()
    if piece:
        yield _chunk(head, {"content": piece})
    yield _chunk(head, {}, "stop")
    yield "data: [DONE]\n\n"


def usage(results: list[dict]) -> dict:
    """OpenAI `usage` over answers."""
    p = sum(r.get("prompt_tokens", 0) for r in results)
    c = sum(r.get("completion_tokens", 0) for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def finish_reason(result: dict, max_new: int) -> str:
    """ "length" when the answer used the whole budget, else "stop"."""
    return "length" if result.get("completion_tokens", 0) >= max_new else "stop"
