"""``golden bake``'s live view: one line per task state change and the tools' progress lines
(Packer ``==>``, Ansible ``PLAY``/``TASK``/recap, Testinfra and Pester results) indented under
their task, instead of every line Airflow logs (execution API, ``[DAG TEST]``, structlog).

The formatter (``LiveView.feed``) is a pure function of events, so it is tested without
Airflow; ``watch()`` wires it into a ``dag.test()`` run in this process: task states from
Airflow's task-instance listeners, log events from structlog and ``logging``, sorted by logger
name (our operators and ``golden_image.*`` shown, Airflow's own dropped). Every line it prints
goes through Airflow's secrets masker first.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

OPERATOR_LOGGERS = "airflow.task.operators.golden_image."
"""Where an operator's ``emit`` (a tool's output lines) and its own messages are logged."""
PIPELINE_LOGGERS = "golden_image"
"""The pipeline's own loggers (steps, platforms, hooks): few lines, each a fact worth showing."""
QUIET_LOGGERS = ("golden_image.hooks.fetch", "golden_image.archive")
"""Pipeline loggers whose info lines are for the task log only (one per file downloaded)."""
ERROR_LEVELS = {"error", "critical", "exception"}
SHOWN_LEVELS = {"info", "warning", *ERROR_LEVELS}

STATE_WIDTH = 24
DETAIL_INDENT = " " * 14

COLOURS = {
    "running": "36",  # cyan
    "success": "32",  # green
    "failed": "31",  # red
    "upstream_failed": "31",
    "up_for_retry": "33",  # yellow
    "skipped": "33",
    "deferred": "35",
}

_RECAP = re.compile(r"^\S+\s+:\s+ok=\d+")
_TEST_RESULT = re.compile(
    r"::(?P<name>[^\s\[]+)(?:\[(?P<params>.*?)\])?\s+(?P<result>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b"
)
_PYTEST_TOTAL = re.compile(r"^=+ (?P<totals>\d+ \w+.* in [\d.]+s.*?) =+$")


@dataclass(frozen=True)
class StateEvent:
    """A task instance changed state."""

    task_id: str
    state: str
    map_index: int = -1
    clock: str = ""


@dataclass(frozen=True)
class LogEvent:
    """One log event: which logger, at what level, its text."""

    logger: str
    level: str
    text: str
    error: str = ""
    """The exception's last line, when the event carries one."""


def tool_line(text: str) -> str | None:
    """The compact form of one line an operator logged (a tool's output), or None to leave it
    out of the live view (it stays in the task log and in ``--verbose``)."""
    line = text.rstrip()
    stripped = line.strip()
    if not stripped:
        return None
    if line.startswith("==> "):  # Packer's ui lines; "    null.builder: ..." are the commands' output
        return stripped
    if stripped.startswith("Build '") and ("errored" in stripped or "finished" in stripped):
        return stripped
    for head in ("PLAY [", "TASK [", "RUNNING HANDLER [", "PLAY RECAP"):
        if stripped.startswith(head):
            return stripped.rstrip("*").rstrip()
    if stripped.startswith(("fatal:", "failed:")) or _RECAP.match(stripped):
        return stripped[:200]
    test = _TEST_RESULT.search(stripped)
    if test:  # "::test_x[paramiko://127.0.0.1-ops] PASSED [ 9%]" -> "PASSED  test_x[ops]"
        params = test["params"] or ""
        if "://" in params.split("-", 1)[0]:  # the host Testinfra ran against: the same for all
            params = params.split("-", 1)[1] if "-" in params else ""
        return f"{test['result']:<7} {test['name']}" + (f"[{params}]" if params else "")
    total = _PYTEST_TOTAL.match(stripped)
    if total:
        return total["totals"]
    if stripped.startswith(("[+] ", "[-] ", "Tests Passed:", "Tests completed in")):  # Pester
        return stripped[:200]
    if stripped.startswith(("deferring:", "nothing changed;")) or stripped.endswith("; continuing"):
        return stripped
    return None


def paint(text: str, state: str, colour: bool) -> str:
    code = COLOURS.get(state)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


class LiveView:
    """Events in, lines out, in the order they happen: tasks run one at a time under
    ``dag.test()``, so a tool line follows its task's ``running`` line, indented. Remembers each
    task's last shown state (a repeated state is not shown again)."""

    def __init__(self, *, colour: bool = False, redact: Callable[[str], str] | None = None) -> None:
        self.colour = colour
        self.redact = redact or (lambda s: s)
        self.shown: dict[tuple[str, int], str] = {}

    def feed(self, event: StateEvent | LogEvent) -> list[str]:
        if isinstance(event, StateEvent):
            return self._state(event)
        return [self.redact(line) for line in self._log(event)]

    def _state(self, event: StateEvent) -> list[str]:
        key = (event.task_id, event.map_index)
        if self.shown.get(key) == event.state:
            return []
        self.shown[key] = event.state
        name = event.task_id if event.map_index < 0 else f"{event.task_id}[{event.map_index}]"
        clock = event.clock or time.strftime("%H:%M:%S")
        return [f"  {clock}  {name:<{STATE_WIDTH}} {paint(event.state, event.state, self.colour)}"]

    def _log(self, event: LogEvent) -> list[str]:
        lines: list[str] = []
        if event.logger.startswith(OPERATOR_LOGGERS):
            lines = [c for c in (tool_line(t) for t in event.text.splitlines()) if c]
        elif (
            event.logger.split(".")[0] == PIPELINE_LOGGERS
            and event.level in SHOWN_LEVELS
            and (event.level != "info" or not event.logger.startswith(QUIET_LOGGERS))
        ):
            first = event.text.strip().splitlines()[:1]
            lines = [first[0][:200]] if first else []
        if event.level in ERROR_LEVELS:
            if not lines:
                first = event.text.strip().splitlines()[:1]
                lines = [first[0][:300]] if first else []
            if event.error:
                lines.append(event.error[:500])
            lines = [paint(f"error: {line}", "failed", self.colour) for line in lines]
        return [DETAIL_INDENT + line for line in lines]

    def missed(self, states: dict[str, str], clock: str = "") -> list[str]:
        """Lines for tasks whose final state the view has not shown (Airflow decided it without
        running them: skipped by the patch check, upstream_failed); ``states`` as
        ``run_family_dag`` returns them (mapped tasks under their task id). More than two in the
        same state are one line (the summary that follows names each task)."""
        by_state: dict[str, list[str]] = {}
        for task_id, state in states.items():
            if not any(t == task_id and s == state for (t, _), s in self.shown.items()):
                by_state.setdefault(state, []).append(task_id)
        out = []
        for state, tasks in by_state.items():
            if len(tasks) > 2:
                out += self._state(StateEvent(f"{len(tasks)} tasks", state, clock=clock))
                self.shown.update({(task, -1): state for task in tasks})
            else:
                for task in tasks:
                    out += self._state(StateEvent(task, state, clock=clock))
        return out


def _exception_line(event: dict[str, Any]) -> str:
    exc = event.get("exc_info")
    if exc is True:
        import sys

        exc = sys.exc_info()
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, tuple) and len(exc) == 3 and exc[1] is not None:
        return f"{type(exc[1]).__name__}: {exc[1]}".splitlines()[0]
    return ""


@contextlib.contextmanager
def watch(out: TextIO, *, colour: bool) -> Iterator[LiveView]:
    """Show a ``dag.test()`` run in this process as a live view on ``out``; Airflow's own log
    lines are dropped while it is active (filtered by logger name, not by their text)."""
    import structlog
    from airflow.listeners import hookimpl
    from airflow.sdk._shared.secrets_masker import redact
    from airflow.sdk.listener import get_listener_manager

    view = LiveView(colour=colour, redact=lambda s: str(redact(s)))

    def show(lines: list[str]) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not fail the task
            for line in lines:
                out.write(line + "\n")
            out.flush()

    def gate(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        show(
            view.feed(
                LogEvent(
                    str(event.get("logger") or event.get("logger_name") or ""),
                    str(event.get("level") or method),
                    str(event.get("event", "")),
                    _exception_line(event),
                )
            )
        )
        raise structlog.DropEvent

    class Gate(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            error = ""
            if record.exc_info and record.exc_info[1] is not None:
                error = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}".splitlines()[0]
            show(view.feed(LogEvent(record.name, record.levelname.lower(), record.getMessage(), error)))
            return False

    class States:
        def _show(self, ti: Any, state: str) -> None:
            index = getattr(ti, "map_index", None)
            show(view.feed(StateEvent(ti.task_id, state, -1 if index is None else int(index))))

        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            self._show(task_instance, "running")

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            self._show(task_instance, "success")

        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            state = getattr(task_instance, "state", None)  # UP_FOR_RETRY when Airflow retries it
            value = str(getattr(state, "value", state) or "failed")
            self._show(task_instance, "up_for_retry" if value == "up_for_retry" else "failed")

        @hookimpl
        def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
            self._show(task_instance, "skipped")

    processors = structlog.get_config()["processors"]  # the list every bound logger shares
    processors.insert(max(len(processors) - 1, 0), gate)  # after formatting, before rendering
    handlers = [h for h in logging.getLogger().handlers]
    stdlib_gate = Gate()
    for handler in handlers:
        handler.addFilter(stdlib_gate)
    listeners = get_listener_manager()
    states = States()
    listeners.add_listener(states)
    try:
        yield view
    finally:
        listeners.pm.unregister(states)
        for handler in handlers:
            handler.removeFilter(stdlib_gate)
        with contextlib.suppress(ValueError):
            processors.remove(gate)
