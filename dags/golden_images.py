"""One Airflow DAG per image family in include/images/, plus the janitor and advisory DAGs placed
by the platforms those families use: one load of the family files (thin loader; see
golden_image.loader and golden_image.maintenance_dags)."""

from golden_image.loader import load_dags

globals().update(load_dags())
