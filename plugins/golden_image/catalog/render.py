"""HTML of the catalog page: our own Jinja2 templates with autoescape on (family files are untrusted
data: every value is escaped, none is marked safe), and the image-age chart as inline SVG
geometry computed here. No script, no stylesheet or font from anywhere else."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).with_name("templates")

BAR_H, BAR_GAP, LABEL_W, CHART_W = 18, 6, 190, 420


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["days"] = days
    return env


def when(timestamp: Any) -> str:
    """A Unix time or an ISO string as ``YYYY-MM-DD HH:MM UTC`` ("-" when missing)."""
    if timestamp is None or timestamp == "":
        return "-"
    if isinstance(timestamp, str):
        return timestamp.replace("T", " ")[:16] + " UTC"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(timestamp)))


def days(value: Any) -> str:
    """An age in days for people: hours under a day."""
    age = float(value)
    return f"{age * 24:.1f} h" if age < 1 else f"{age:.1f} d"


def chart(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of image age per family, scaled to the oldest image or the longest ``max_age_days``;
    a bar past its family's maximum age is marked ``over``."""
    scale = max([1.0] + [float(e["age_days"]) for e in entries] + [float(e["max_age_days"]) for e in entries])
    bars = []
    for i, entry in enumerate(entries):
        y = i * (BAR_H + BAR_GAP)
        age = float(entry["age_days"])
        bars.append(
            {
                "family": entry["family"],
                "y": y,
                "text_y": y + BAR_H - 5,
                "width": max(1.0, round(age / scale * CHART_W, 1)),
                "limit_x": round(LABEL_W + float(entry["max_age_days"]) / scale * CHART_W, 1),
                "age_days": age,
                "max_age_days": entry["max_age_days"],
                "over": age > float(entry["max_age_days"]),
            }
        )
    return {
        "bars": bars,
        "label_w": LABEL_W,
        "width": LABEL_W + CHART_W + 70,
        "height": max(BAR_H, len(bars) * (BAR_H + BAR_GAP)),
        "bar_h": BAR_H,
        "scale_days": scale,
    }


def catalog_page(data: dict[str, Any], *, base: str, airflow_root: str, user: str) -> str:
    """The overview: chart, one row per family, the broken files."""
    return (
        environment()
        .get_template("catalog.html")
        .render(data=data, chart=chart(data["chart"]), base=base, root=airflow_root, user=user)
    )


def family_page(
    family: dict[str, Any], detail: dict[str, Any] | None, error: str | None, *, base: str, airflow_root: str
) -> str:
    """One family's published image: test results and packages (its manifest), every image."""
    return (
        environment()
        .get_template("family.html")
        .render(family=family, detail=detail, error=error, base=base, root=airflow_root)
    )
