"""A run in one screen: what was decided, built, tested, shared and deleted.

``run_summary`` turns what the steps returned (their XComs) and the tasks' states into the text
the ``summarize_run`` step logs and the DAG run's note shows (``plugins/golden_run_notes.py`` sets
it). Pure: no Airflow, no I/O; every field may be missing (a step that failed returned nothing).
"""

from __future__ import annotations

from typing import Any

NOTE_LIMIT = 1000
"""Airflow's ``dag_run_note.content`` column is ``VARCHAR(1000)`` (Postgres enforces it)."""

FAILED_STATES = ("failed", "upstream_failed", "up_for_retry")


def _ids(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{i}`" for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _short(text: Any, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_outcome(states: dict[str, str]) -> str:
    """``failed`` when a task failed (a teardown too: it left something behind), else ``success``."""
    return "failed" if any(state in FAILED_STATES for state in states.values()) else "success"


def run_summary(facts: dict[str, Any]) -> str:
    """Markdown, at most ``NOTE_LIMIT`` characters. ``facts``: ``family``, ``run_id``, ``states``
    (task id, or ``task_id_<map index>``, -> state), and the steps' return values where they
    returned one: ``decision``, ``image``, ``scan``, ``validation``, ``shares`` (one per region),
    ``publish``, ``cleanup``, ``terminated`` (teardown task id -> what it returned)."""
    states: dict[str, str] = facts.get("states") or {}
    decision = facts.get("decision") or {}
    image = facts.get("image") or {}
    lines = [f"**{facts.get('family', '?')}** `{facts.get('run_id', '?')}`: {run_outcome(states)}", ""]

    reasons = "; ".join(str(r) for r in decision.get("reasons") or []) or "-"
    if not decision:
        lines.append(f"- **decided**: nothing (check_patches {states.get('check_patches', 'did not run')})")
    elif decision.get("rebuild"):
        lines.append(f"- **decided**: rebuild: {_short(reasons, 300)}")
    else:
        published = decision.get("published_image_id")
        lines.append(
            f"- **decided**: skip: {_short(reasons, 300)}"
            + (f" (published `{published}` stays)" if published else "")
        )
    if not decision.get("rebuild") and decision:
        return _fit(lines + _failed(states))

    scan = facts.get("scan") or {}
    validation = facts.get("validation") or {}
    if image:
        lines.append(
            f"- **built**: `{image.get('image_id')}` version {image.get('version')} "
            f"({_image_status(image, scan, validation)})"
        )
    else:
        lines.append(f"- **built**: nothing (capture_image {states.get('capture_image', 'did not run')})")

    if scan:
        counts = scan.get("counts") or {}
        verdict = "passed" if scan.get("passed") else "REJECTED"
        findings, fixable = counts.get("findings", "?"), counts.get("fixable", "?")
        lines.append(f"- **scanned**: {findings} findings, {fixable} fixable: {verdict}")
    elif image:
        lines.append(
            f"- **scanned**: no result (scan_vulnerabilities {states.get('scan_vulnerabilities', '-')})"
        )

    if validation:
        tests = validation.get("tests") or 0
        failed = (validation.get("failures") or 0) + (validation.get("errors") or 0)
        verdict = "passed" if validation.get("passed") else "REJECTED"
        lines.append(f"- **tested**: {tests} tests, {tests - failed} passed, {failed} failed: {verdict}")
        names = [str(t.get("test")) for t in validation.get("failed_tests") or [] if isinstance(t, dict)]
        if names:
            lines.append(f"  - failed: {_ids(names)}")
    elif image:
        lines.append(f"- **tested**: no result (validate_image {states.get('validate_image', '-')})")

    shares = [s for s in facts.get("shares") or [] if isinstance(s, dict)]
    if shares:
        regions = [str(s.get("region")) for s in shares]
        accounts = sorted({str(a) for s in shares for a in s.get("accounts") or []})
        lines.append(
            f"- **shared**: {', '.join(regions)}" + (f" (accounts {', '.join(accounts)})" if accounts else "")
        )
    elif image:
        lines.append("- **shared**: nowhere")

    publish = facts.get("publish") or {}
    if publish:
        previous = _previous(publish.get("previous"))
        lines.append(
            f"- **published**: `{publish.get('pointer')}` -> `{publish.get('image_id')}`"
            + (f" (was `{previous}`)" if previous else "")
        )

    cleanup = facts.get("cleanup") or {}
    retired = [str(d.get("image_id")) for d in cleanup.get("delete") or [] if isinstance(d, dict)]
    terminated = [task for task, result in sorted((facts.get("terminated") or {}).items()) if result]
    verb = "would retire" if cleanup.get("dry_run") else "retired"
    deleted = [f"{verb} {_ids(retired)}" if retired else "no image retired"]
    deleted.append("instances removed by " + ", ".join(terminated) if terminated else "no instance to remove")
    lines.append(f"- **deleted**: {'; '.join(deleted)}")
    return _fit(lines + _failed(states))


def _image_status(image: dict[str, Any], scan: dict[str, Any], validation: dict[str, Any]) -> str:
    """The image's status after the run (the capture step returned it as it was then)."""
    if (scan and not scan.get("passed")) or (validation and not validation.get("passed")):
        return "rejected"
    return "validated" if validation.get("passed") else str(image.get("status"))


def _previous(previous: Any) -> str | None:
    """What the pointer pointed at: one image, or per region (``{region: image}``)."""
    if isinstance(previous, dict):
        found = {str(v) for v in previous.values() if v}
        if len(found) <= 1:
            return next(iter(found), None)
        return ", ".join(f"{region}: {image}" for region, image in sorted(previous.items()) if image)
    return str(previous) if previous else None


def _failed(states: dict[str, str]) -> list[str]:
    """The tasks that failed by name; the ones that never ran because of them, counted."""
    failed = [f"{task} ({state})" for task, state in states.items() if state in ("failed", "up_for_retry")]
    blocked = sum(1 for state in states.values() if state == "upstream_failed")
    if blocked:
        failed.append(f"{blocked} task{'s' if blocked > 1 else ''} not run (upstream_failed)")
    return [f"- **failed**: {'; '.join(failed)}"] if failed else []


def _fit(lines: list[str]) -> str:
    """Join; when over the limit, shorten the longest lines first (a note is one screen)."""
    text = "\n".join(lines)
    while len(text) > NOTE_LIMIT:
        longest = max(range(len(lines)), key=lambda i: len(lines[i]))
        keep = max(40, len(lines[longest]) - (len(text) - NOTE_LIMIT) - 1)
        if keep >= len(lines[longest]):
            return text[: NOTE_LIMIT - 1] + "…"
        lines[longest] = lines[longest][: keep - 1] + "…"
        text = "\n".join(lines)
    return text
