"""Airflow plugin: the "Golden images" catalog page in the api-server (``/golden-images/``), also
in the Airflow UI's navigation (an external view). Read-only, behind Airflow's authentication.

Airflow imports this file in every component that loads plugins (scheduler, workers too), so it
imports nothing but ``AirflowPlugin``: the FastAPI app is built when the api-server asks for it.
The app lives in ``golden_image/catalog/`` (``.airflowignore`` keeps Airflow from importing that
package's modules as plugins).
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

PREFIX = "/golden-images"  # golden_image.catalog.app.PREFIX (not imported here: it imports FastAPI)


class GoldenImageCatalogPlugin(AirflowPlugin):
    name = "golden_image_catalog"
    external_views = [
        {
            "name": "Golden images",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "golden-images",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Built on first use (the api-server), never at import."""
        from golden_image.catalog.app import PREFIX as prefix
        from golden_image.catalog.app import create_app

        app = getattr(type(self), "_app", None)
        if app is None:
            app = create_app()
            type(self)._app = app  # type: ignore[attr-defined]
        return [{"app": app, "url_prefix": prefix, "name": "Golden images"}]
