"""One Airflow DAG per image family in include/images/ (thin loader; see golden_image.loader)."""

from golden_image.loader import load_dags

globals().update(load_dags())
