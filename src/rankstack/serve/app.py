"""The FastAPI application: versioned JSON routes, the web page, and one error mapping.

    app = create_app(SearchService.open(Index.open("my-index")))
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rankstack._version import __version__
from rankstack.errors import DataFormatError, RankstackError, WriterLockedError, http_status_for
from rankstack.serve.service import MAX_K, MAX_QUERY_CHARS, SearchResult, SearchService, json_bytes
from rankstack.serve.snippets import highlight
from rankstack.stages import stage_names

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class SearchRequest(BaseModel):
    """Body of ``POST /v1/search``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(max_length=MAX_QUERY_CHARS, description="Query text.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of hits.")
    pipeline: str | None = Field(None, max_length=2000, description="Pipeline string; default: the server's.")


class DocumentBody(BaseModel):
    """Body of ``PUT /v1/docs/{doc_id}``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=1_000_000, description="Document text.")
    title: str = Field("", max_length=10_000, description="Optional title.")


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def _doc_id(request: Request, routed: str) -> str:
    """The document id as the client sent it: the raw path after the route's prefix, decoded once.

    Some ASGI servers and test clients decode the path twice, which would turn an id "a%2Fb" into "a/b".
    """
    raw = request.scope.get("raw_path")
    marker = "/docs/" if request.url.path.startswith("/v1/") else "/doc/"
    if not raw:
        return routed
    text = raw.decode("latin-1")
    position = text.find(marker)
    if position < 0:
        return routed
    try:
        return unquote(text[position + len(marker):], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DataFormatError("the document id in the path is not valid UTF-8 once percent-decoded") from None


def _error(status: int, kind: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"type": kind, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status)


def _json(result: SearchResult) -> Response:
    """A search result serialised once, straight to bytes (the route's annotation still documents its shape)."""
    return Response(json_bytes(result.to_json()), media_type="application/json")


def create_app(service: SearchService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        await service.close()

    app = FastAPI(title="rankstack", version=__version__, lifespan=lifespan,
                  description="Multi-stage text ranking: search an index with any pipeline.")
    _add_error_handlers(app)
    _add_search_routes(app, service)
    _add_document_routes(app, service)
    _add_pages(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """One mapping of every error to a JSON body and a status (rankstack.errors.HTTP_STATUSES)."""

    @app.exception_handler(RankstackError)
    async def domain_error(_: Request, error: RankstackError) -> JSONResponse:
        response = _error(http_status_for(error), type(error).__name__, str(error))
        if isinstance(error, WriterLockedError):  # a compaction or another writer: try again shortly
            response.headers["Retry-After"] = str(error.retry_after_seconds)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [{"location": list(e.get("loc", ())), "message": e.get("msg", "")} for e in error.errors()]
        first = details[0] if details else {"location": [], "message": "invalid request"}
        where = ".".join(str(part) for part in first["location"])
        return _error(422, "ValidationError", f"{where}: {first['message']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, "HTTPError", str(error.detail))


def _add_search_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "index": str(service.index.path),
                "documents": service.index.num_docs, "dense": service.index.dense_keys()}

    @app.get("/v1/pipelines")
    async def pipelines() -> dict[str, Any]:
        return {"default": str(service.pipeline(None)), "presets": service.preset_list(), "stages": stage_names()}

    @app.get("/v1/search")
    async def search_get(q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)],
                         k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                         pipeline: Annotated[str | None, Query(max_length=2000)] = None) -> dict[str, Any]:
        return _json(await service.search(q, k, pipeline))  # type: ignore[return-value]

    @app.post("/v1/search")
    async def search_post(body: SearchRequest) -> dict[str, Any]:
        return _json(await service.search(body.query, body.k, body.pipeline))  # type: ignore[return-value]


def _add_document_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/v1/docs/{doc_id:path}")
    async def document(request: Request, doc_id: str) -> dict[str, str]:
        return service.document(_doc_id(request, doc_id))

    @app.put("/v1/docs/{doc_id:path}")
    async def put_document(request: Request, doc_id: str, body: DocumentBody,
                           authorization: Annotated[str | None, Header()] = None,
                           x_api_key: Annotated[str | None, Header()] = None) -> dict[str, str]:
        """Add or replace a document (needs the API key the server was started with)."""
        service.check_write_access(_presented_key(authorization, x_api_key))
        return await service.put_document(_doc_id(request, doc_id), body.title, body.text)

    @app.delete("/v1/docs/{doc_id:path}")
    async def delete_document(request: Request, doc_id: str, authorization: Annotated[str | None, Header()] = None,
                              x_api_key: Annotated[str | None, Header()] = None) -> dict[str, str]:
        """Delete a document (needs the API key the server was started with)."""
        service.check_write_access(_presented_key(authorization, x_api_key))
        return await service.delete_document(_doc_id(request, doc_id))


def _add_pages(app: FastAPI, service: SearchService) -> None:
    """The server-rendered search page and document pages (no JavaScript, no CDN)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request, q: str = "", k: int = 10, pipeline: str = "") -> HTMLResponse:
        context: dict[str, Any] = {"q": q, "k": k, "pipeline": pipeline or service.default_pipeline,
                                   "presets": service.presets, "result": None, "error": None,
                                   "documents": service.index.num_docs}
        status = 200
        if q:
            try:
                context["result"] = await service.search(q, min(max(k, 1), MAX_K), pipeline or None)
            except RankstackError as error:  # shown in place on the page, with the status it deserves
                context["error"] = str(error)
                status = http_status_for(error)
        return TEMPLATES.TemplateResponse(request, "search.html", context, status_code=status)

    # Result links carry the id as a query parameter: in a path, ids such as "..", "a/../b" or "x#y"
    # would be rewritten by the browser before the request is sent.
    @app.get("/doc", response_class=HTMLResponse, include_in_schema=False)
    async def document_page_by_query(request: Request, id: str, q: str = "") -> HTMLResponse:  # noqa: A002
        return await document_page(request, id, q)

    @app.get("/doc/{doc_id:path}", response_class=HTMLResponse, include_in_schema=False)
    async def document_page(request: Request, doc_id: str, q: str = "") -> HTMLResponse:
        try:
            doc = service.document(_doc_id(request, doc_id) if request.url.path.startswith("/doc/") else doc_id)
        except RankstackError as error:
            return TEMPLATES.TemplateResponse(request, "document.html", {"doc": None, "error": str(error), "q": q},
                                              status_code=404)
        terms = set(service.index.analyzer.analyze(q)) if q else set()
        body = highlight(doc["text"], terms, service.index.analyzer)
        return TEMPLATES.TemplateResponse(request, "document.html", {"doc": doc, "body": body, "q": q, "error": None})

