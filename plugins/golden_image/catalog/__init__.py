"""The "Golden images" catalog page: a read-only FastAPI app the Airflow api-server mounts
(registered by ``plugins/golden_image_catalog.py``).

``data`` reads what the page shows (family files, each family's platform with bounded waits,
Airflow's metadata DB), ``render`` turns it into HTML (Jinja2, autoescaped, an inline SVG chart),
``app`` serves it behind Airflow's authentication. Nothing here writes.
"""
