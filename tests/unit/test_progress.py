"""What a person sees of a run: ``golden bake``'s live view (a pure formatter over events) and
the one-screen summary that becomes the DAG run's note."""

from __future__ import annotations

from typing import Any

from golden_image.liveview import LiveView, LogEvent, StateEvent, tool_line
from golden_image.summary import NOTE_LIMIT, run_outcome, run_summary

OP = "airflow.task.operators.golden_image.operators.family."


# -- live view -----------------------------------------------------------------------------------
def test_tool_lines_keep_progress_and_drop_the_commands_output() -> None:
    assert tool_line("==> null.builder: Provisioning with shell script: ./x.sh") == (
        "==> null.builder: Provisioning with shell script: ./x.sh"
    )
    assert tool_line("    null.builder: Get:1 http://deb.debian.org/debian bookworm InRelease") is None
    assert tool_line("==> Wait completed after 4 seconds") == "==> Wait completed after 4 seconds"
    assert tool_line("TASK [baseline : Harden sshd] *****************") == "TASK [baseline : Harden sshd]"
    assert tool_line("PLAY RECAP *********") == "PLAY RECAP"
    assert tool_line("ok: [i-1]") is None and tool_line("changed: [i-1] => (item=x)") is None
    assert tool_line('fatal: [i-1]: FAILED! => {"msg": "boom"}') == 'fatal: [i-1]: FAILED! => {"msg": "boom"}'
    recap = "i-1   : ok=9    changed=6    unreachable=0    failed=0    skipped=0"
    assert tool_line(recap) == recap
    assert (
        tool_line("::test_no_shell_history[paramiko://127.0.0.1] PASSED     [ 13%]")
        == "PASSED  test_no_shell_history"
    )
    assert tool_line("suite.py::test_sshd_config[ssh://h] FAILED  [ 50%]") == "FAILED  test_sshd_config"
    assert (
        tool_line("::test_sshd_hardened[paramiko://127.0.0.1-PermitRootLogin no] PASSED [ 60%]")
        == "PASSED  test_sshd_hardened[PermitRootLogin no]"
    )
    assert tool_line("============ 22 passed in 3.65s ============") == "22 passed in 3.65s"
    assert tool_line("============================= test session starts ====") is None
    assert tool_line("platform linux -- Python 3.11.7, pytest-9.2.0") is None
    assert tool_line("deferring: image ami-1 not available yet") == "deferring: image ami-1 not available yet"
    assert tool_line("") is None and tool_line("   ") is None


def test_a_run_reads_as_state_changes_with_progress_under_its_task() -> None:
    view = LiveView()
    events: list[Any] = [
        LogEvent("airflow.dag_processing.dagbag.BundleDagBag", "info", "Filling up the DagBag from /x"),
        StateEvent("bake_packer", "running", clock="12:01:03"),
        LogEvent("airflow.sdk.definitions.dag", "info", "[DAG TEST] starting task_id=bake_packer"),
        LogEvent("airflow.api_fastapi.execution_api.routes.task_instances", "info", "Task started"),
        LogEvent("task", "info", "::group::Post Execute"),
        LogEvent(OP + "PackerBakeOperator", "info", "==> null.builder: Connected to SSH!"),
        LogEvent(OP + "PackerBakeOperator", "info", "    null.builder: Reading package lists..."),
        LogEvent("golden_image.steps", "info", "packer finished in 7.1 s\nsecond line"),
        LogEvent("golden_image.hooks.fetch", "info", "http://deb/InRelease: downloaded 1 bytes"),
        LogEvent("golden_image.hooks.fetch", "warning", "http://deb/InRelease: retrying"),
        LogEvent("py.warnings", "warning", "DeprecationWarning: something"),
        StateEvent("bake_packer", "success", clock="12:01:10"),
        StateEvent("bake_packer", "success", clock="12:01:11"),  # the same state again: no line
        StateEvent("share_image", "running", map_index=1, clock="12:01:12"),
    ]
    lines = [line for event in events for line in view.feed(event)]
    assert lines == [
        "  12:01:03  bake_packer              running",
        "              ==> null.builder: Connected to SSH!",
        "              packer finished in 7.1 s",
        "              http://deb/InRelease: retrying",
        "  12:01:10  bake_packer              success",
        "  12:01:12  share_image[1]           running",
    ]


def test_errors_are_shown_with_their_exception_and_in_colour_only_when_asked() -> None:
    event = LogEvent("task", "error", "Task failed with exception", error="PlatformError: no data")
    assert LiveView().feed(event) == [
        "              error: Task failed with exception",
        "              error: PlatformError: no data",
    ]
    painted = LiveView(colour=True).feed(StateEvent("validate_image", "failed", clock="1"))
    assert painted == ["  1  validate_image           \x1b[31mfailed\x1b[0m"]
    assert "\x1b[" not in LiveView(colour=False).feed(StateEvent("validate_image", "failed", clock="1"))[0]


def test_every_line_goes_through_the_masker() -> None:
    view = LiveView(redact=lambda s: s.replace("hunter2", "***"))
    shown = view.feed(LogEvent(OP + "AnsibleProvisionOperator", "info", 'fatal: [i]: FAILED! => "hunter2"'))
    shown += view.feed(LogEvent("golden_image.steps", "info", "password hunter2"))
    shown += view.feed(LogEvent("task", "error", "failed", error="Error: hunter2"))
    assert shown and not any("hunter2" in line for line in shown)


def test_states_airflow_decided_without_running_the_task_are_shown_at_the_end() -> None:
    view = LiveView()
    view.feed(StateEvent("check_patches", "success", clock="1"))
    view.feed(StateEvent("share_image", "success", map_index=0, clock="1"))
    missed = view.missed(
        {"check_patches": "success", "launch_builder": "skipped", "share_image": "success"}, clock="2"
    )
    assert missed == ["  2  launch_builder           skipped"]
    many = {"check_patches": "success", **{f"t{i}": "skipped" for i in range(5)}, "x": "upstream_failed"}
    assert LiveView().missed(many, clock="3") == [
        "  3  check_patches            success",
        "  3  5 tasks                  skipped",
        "  3  x                        upstream_failed",
    ]


# -- run summary (the DAG run's note) ------------------------------------------------------------
def baked(**overrides: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "family": "debian12-base",
        "run_id": "manual__1",
        "states": {"check_patches": "success", "validate_image": "success", "share_image_0": "success"},
        "decision": {"rebuild": True, "reasons": ["no published image yet"], "published_image_id": None},
        "image": {"image_id": "img-1", "version": "20261201.1", "status": "captured"},
        "scan": {"counts": {"findings": 6, "fixable": 0}, "passed": True},
        "validation": {"tests": 22, "failures": 0, "errors": 0, "passed": True, "failed_tests": []},
        "shares": [
            {"region": "local", "accounts": ["team-web", "team-data"]},
            {"region": "local-dr", "accounts": ["team-web", "team-data"]},
        ],
        "publish": {
            "pointer": "/golden/debian12-base/latest",
            "image_id": "img-1",
            "previous": {"local": "img-0", "local-dr": "img-0"},
        },
        "cleanup": {"delete": [{"image_id": "img-old", "why": "older than the 3 kept"}], "dry_run": False},
        "terminated": {"terminate_builder": True, "terminate_test_instance": True},
    }
    return facts | overrides


def test_a_bake_is_summarised_decided_built_tested_shared_deleted() -> None:
    note = run_summary(baked())
    assert note.splitlines() == [
        "**debian12-base** `manual__1`: success",
        "",
        "- **decided**: rebuild: no published image yet",
        "- **built**: `img-1` version 20261201.1 (validated)",
        "- **scanned**: 6 findings, 0 fixable: passed",
        "- **tested**: 22 tests, 22 passed, 0 failed: passed",
        "- **shared**: local, local-dr (accounts team-data, team-web)",
        "- **published**: `/golden/debian12-base/latest` -> `img-1` (was `img-0`)",
        "- **deleted**: retired `img-old`; instances removed by terminate_builder, terminate_test_instance",
    ]


def test_a_skip_says_why_and_what_stays_published() -> None:
    facts = baked(
        decision={
            "rebuild": False,
            "reasons": ["up to date: img-1 is 2 days old"],
            "published_image_id": "img-1",
        },
        states={"check_patches": "success", "launch_builder": "skipped"},
    )
    assert run_summary(facts).splitlines()[2:] == [
        "- **decided**: skip: up to date: img-1 is 2 days old (published `img-1` stays)"
    ]


def test_a_rejected_image_names_the_failed_tests_and_tasks() -> None:
    validation = {
        "tests": 23,
        "failures": 1,
        "errors": 0,
        "passed": False,
        "failed_tests": [{"test": "test_baked_service_not_running", "message": "x"}],
    }
    states = {"validate_image": "failed", "share_image": "upstream_failed", "terminate_builder": "success"}
    facts = baked(validation=validation, states=states, shares=[], publish=None, cleanup=None)
    facts["terminated"] = {"terminate_builder": True, "terminate_test_instance": None}
    note = run_summary(facts)
    assert note.startswith("**debian12-base** `manual__1`: failed")
    assert "- **built**: `img-1` version 20261201.1 (rejected)" in note
    assert "- **tested**: 23 tests, 22 passed, 1 failed: REJECTED" in note
    assert "  - failed: `test_baked_service_not_running`" in note
    assert "- **shared**: nowhere" in note and "**published**" not in note
    assert "no image retired; instances removed by terminate_builder" in note
    assert note.endswith("- **failed**: validate_image (failed); 1 task not run (upstream_failed)")


def test_a_run_that_failed_before_deciding_says_so() -> None:
    note = run_summary({"family": "f", "run_id": "r", "states": {"check_patches": "failed"}})
    assert "- **decided**: nothing (check_patches failed)" in note
    assert note.endswith("- **failed**: check_patches (failed)")
    assert run_outcome({"a": "success", "b": "skipped"}) == "success"


def test_the_note_fits_airflows_column_however_long_the_inputs() -> None:
    many = [f"img-{i:040d}" for i in range(200)]
    facts = baked(
        decision={"rebuild": True, "reasons": ["x" * 5000]},
        cleanup={"delete": [{"image_id": i} for i in many]},
        shares=[{"region": f"region-{i}", "accounts": many} for i in range(50)],
    )
    note = run_summary(facts)
    assert len(note) <= NOTE_LIMIT
    assert note.startswith("**debian12-base**") and "- **tested**: 22 tests" in note


def test_the_note_keeps_what_it_said_above_the_summary() -> None:
    from golden_run_notes import NOTE_LIMIT as PLUGIN_LIMIT
    from golden_run_notes import summary_note, with_summary

    assert PLUGIN_LIMIT == NOTE_LIMIT  # the plugin keeps its own copy to stay light
    summary = run_summary(baked())
    assert with_summary(None, summary) == with_summary("", summary) == summary
    reason = "advisory DSA-5724-1: openssh-server 1:9.2p1-2+deb12u2 < 1:9.2p1-2+deb12u3"
    assert with_summary(reason, summary) == f"{reason}\n\n{summary}"
    retried = run_summary(baked(states={"validate_image": "failed"}))  # the same run, cleared and re-run
    assert with_summary(with_summary(reason, summary), retried) == f"{reason}\n\n{retried}"
    long = with_summary("x" * 900, summary)
    assert len(long) == NOTE_LIMIT and long.startswith("x" * 900) and long.endswith("…")
    assert summary_note({"note": summary}) == summary
    assert summary_note({"note": "  "}) is None and summary_note(None) is None and summary_note("x") is None
