"""The catalog's FastAPI app, mounted by the api-server at :data:`PREFIX` (see
``plugins/golden_image_catalog.py``).

Authentication is Airflow's own: every route depends on the core API's ``get_user`` (a Bearer JWT,
or the ``_token`` cookie the Airflow UI sets) and on DAG read access (``requires_access_dag``);
a user sees only the families whose DAG they may read. Without a valid token the JSON routes
answer 401 (403 for an invalid token), the HTML pages redirect to Airflow's login page. GET only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

PREFIX = "/golden-images"

HEADERS = {
    # the pages run no script at all; styles are inline; framed only by Airflow itself (external view)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def _paths(request: Request) -> tuple[str, str]:
    """(this app's base path, Airflow's base path), from where the api-server mounted us."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    root = base[: -len(PREFIX)] if base.endswith(PREFIX) else ""
    return base, root


def _allowed(user: Any) -> Callable[[str], bool]:
    """Whether the user may read a DAG id: the families the page lists. The DAGs in the metadata
    DB are asked for at once; a family whose DAG is not there yet (a new or broken file the DAG
    processor has not parsed) is asked for by its id."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    known = manager.get_authorized_dag_ids(user=user, method="GET")

    def allowed(dag_id: str) -> bool:
        return dag_id in known or manager.is_authorized_dag(
            method="GET", details=DagDetails(id=dag_id), user=user
        )

    return allowed


def create_app() -> FastAPI:
    app = FastAPI(
        title="Golden images",
        description="The golden-image catalog: read-only, behind Airflow's authentication.",
        dependencies=[Depends(requires_access_dag("GET"))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        """JSON for the API; for a page without a valid login, Airflow's login page."""
        page = not request.url.path.startswith(f"{_paths(request)[0]}/api/")
        if page and exc.status_code in (401, 403) and exc.detail != "Forbidden":
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303, headers=HEADERS)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=HEADERS)

    @app.get("/api/families")
    def families_json(user: GetUserDep) -> JSONResponse:
        from golden_image.catalog import data

        return JSONResponse(data.overview(allowed=_allowed(user)), headers=HEADERS)

    @app.get("/api/families/{family}/manifest")
    def manifest_json(family: str, user: GetUserDep) -> JSONResponse:
        spec, detail, error = _detail(family, user)
        return JSONResponse(
            {"family": spec.name, "error": error, **(detail or {"published": None, "images": []})},
            headers=HEADERS,
        )

    @app.get("/", response_class=HTMLResponse)
    def catalog_page(request: Request, user: GetUserDep) -> HTMLResponse:
        from golden_image.catalog import data, render

        base, root = _paths(request)
        html = render.catalog_page(
            data.overview(allowed=_allowed(user)), base=base, airflow_root=root, user=user.get_name()
        )
        return HTMLResponse(html, headers=HEADERS)

    @app.get("/families/{family}", response_class=HTMLResponse)
    def family_page(request: Request, family: str, user: GetUserDep) -> HTMLResponse:
        from golden_image.catalog import render

        spec, detail, error = _detail(family, user)
        base, root = _paths(request)
        shown = {"name": spec.name, "description": spec.description, "platform": spec.platform}
        return HTMLResponse(
            render.family_page(shown, detail, error, base=base, airflow_root=root), headers=HEADERS
        )

    return app


def _detail(family: str, user: Any) -> tuple[Any, dict[str, Any] | None, str | None]:
    from golden_image.catalog import data
    from golden_image.spec import dag_id_for

    if not _allowed(user)(dag_id_for(family)):
        raise HTTPException(404, f"no family '{family}' you may read")
    try:
        return data.family_detail(family)
    except KeyError:
        raise HTTPException(404, f"no family '{family}' you may read") from None
