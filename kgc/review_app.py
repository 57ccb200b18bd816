"""`kgc review`'s web app (FastAPI; entry layer, beside kgc.cli): the review page and its
JSON API over an extraction folder and a corrections file. The logic is the core's
(`kgc.review`); this module maps HTTP to it. Nothing lives in memory that a restart would
lose: the extraction is read once at start (it does not change), the corrections file on
every request. docs/review.md."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from kgc.chunking import locate
from kgc.errors import KgcError
from kgc.review.corpus import Document, load_corpus
from kgc.review.corrections import Corrections, ReviewError, facts_of, is_done, seed
from kgc.review.queue import parts, review_queue
from kgc.serving import api_keys, key_hash, key_matches

MAX_BODY = 64 * 1024  # a decision is a few hundred bytes
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def asset(name: str) -> str:
    return (resources.files("kgc.review") / name).read_text(encoding="utf-8")


def read_schema_relations(path: str) -> list[str]:
    from kgc.schema import read_schema

    return list(read_schema(path).roles)


def create_app(
    extract_dir: str | Path,
    corrections: str | Path,
    schema: str | None = None,
    api_keys_env: str = "KGC_API_KEYS",
) -> FastAPI:
    docs, relations = load_corpus(extract_dir)
    if schema:
        relations = read_schema_relations(schema)
    store = Corrections(corrections)
    queue = review_queue({d: doc.signals for d, doc in docs.items()})
    order = {d: i for i, (d, _) in enumerate(queue)}
    # only hashes are held, as Serve does (kgc.serving)
    hashes = {key_hash(k) for k in api_keys(api_keys_env)}
    app = FastAPI(title="kgc review", docs_url=None, redoc_url=None, openapi_url=None)

    def check(request: Request) -> None:
        if hashes:
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not key_matches(token, hashes):
                raise HTTPException(
                    401,
                    {"message": "missing or wrong API key (Authorization: Bearer …)",
                     "field": "authorization"},
                )  # fmt: skip

    def document(doc_id: str) -> Document:
        doc = docs.get(doc_id)
        if doc is None:
            raise HTTPException(
                404, {"message": f"unknown document {doc_id[:80]!r}", "field": "doc_id"}
            )
        return doc

    def view(doc: Document, rec: dict | None) -> dict:
        reviewed = rec is not None
        rec = rec or seed(doc)
        facts = []
        for f in facts_of(rec):
            f = dict(f)
            for end in ("head", "tail"):
                if f.get(f"{end}_span") is None:
                    f[f"{end}_span"] = locate(doc.text, f[end])
            facts.append(f)
        return {
            "id": doc.id,
            "text": doc.text,
            "facts": facts,
            "done": reviewed and is_done(rec),
            "reviewed": reviewed,
            "position": order[doc.id],
            "score": queue[order[doc.id]][1],
            "signals": {**doc.signals.as_dict(), "parts": parts(doc.signals)},
        }

    @app.exception_handler(ReviewError)
    async def _review_error(request: Request, exc: ReviewError):
        return JSONResponse({"detail": {"message": str(exc), "field": exc.field}}, exc.status)

    @app.exception_handler(KgcError)
    async def _kgc_error(request: Request, exc: KgcError):
        return JSONResponse({"detail": {"message": str(exc), "field": "corrections"}}, 409)

    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return HTMLResponse(asset("review.html"), headers={"Content-Security-Policy": CSP})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, {"message": f"no asset {name[:40]!r}", "field": "name"})
        return Response(asset(name), media_type=ASSETS[name])

    @app.get("/api/queue")
    def get_queue(request: Request) -> dict:
        check(request)
        records = store.read()
        return {
            "relations": relations,
            "corrections": str(store.path),
            "documents": [
                {
                    "id": d,
                    "score": score,
                    "facts": len(docs[d].facts),
                    "reviewed": d in records,
                    "done": d in records and is_done(records[d]),
                }
                for d, score in queue
            ],
        }

    @app.get("/api/documents/{doc_id}")
    def get_document(doc_id: str, request: Request) -> dict:
        check(request)
        doc = document(doc_id)
        return view(doc, store.read().get(doc.id))

    @app.post("/api/documents/{doc_id}/decisions")
    async def decide(doc_id: str, request: Request) -> dict:
        check(request)
        doc = document(doc_id)
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            raise HTTPException(
                413, {"message": f"a decision has at most {MAX_BODY} bytes", "field": "body"}
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPException(
                    413, {"message": f"a decision has at most {MAX_BODY} bytes", "field": "body"}
                )
        try:
            decision = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ReviewError("body", f"the body is not valid JSON: {exc}"[:200]) from None
        rec = store.decide(doc, decision, relations)
        return view(doc, rec)

    return app


def check_bind(host: str, api_keys_env: str) -> None:
    """Away from loopback the page is open to the network: only with an API key."""
    if host not in LOOPBACK and not api_keys(api_keys_env):
        raise KgcError(
            f"--host {host}: binding beyond 127.0.0.1 needs API keys; set "
            f"{api_keys_env}=key1,key2 in the environment (the page asks for the key)"
        )


def run(
    extract_dir: str,
    corrections: str,
    schema: str | None,
    host: str,
    port: int,
    api_keys_env: str = "KGC_API_KEYS",
) -> None:
    import uvicorn

    check_bind(host, api_keys_env)
    app = create_app(extract_dir, corrections, schema, api_keys_env)
    print(f"kgc review: http://{host}:{port}/  (corrections: {corrections})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
