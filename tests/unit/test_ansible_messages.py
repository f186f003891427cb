"""What AnsibleHook says about a failed task: the module's message, its rc, the failed loop items."""

from __future__ import annotations

from golden_image.hooks.ansible import AnsibleSummary, Redactor


def _failed(result: dict[str, object]) -> AnsibleSummary:
    summary = AnsibleSummary()
    event = {"event": "runner_on_failed", "event_data": {"task": "Install", "host": "i-1", "res": result}}
    summary.record(event, Redactor(["s3cret"]))
    return summary


def test_a_module_rc_is_part_of_the_message() -> None:
    summary = _failed({"msg": "unexpected rc from 'x.exe /q': see rc, stdout, and stderr", "rc": 1603})
    assert summary.failed_message == "unexpected rc from 'x.exe /q': see rc, stdout, and stderr\nrc=1603"


def test_a_loop_names_its_failed_items_and_secrets_stay_masked() -> None:
    summary = _failed(
        {
            "msg": "One or more items failed",
            "results": [
                {"item": "datadogagent", "_ansible_item_label": "datadogagent", "changed": True},
                {
                    "item": "datadog-process-agent",
                    "_ansible_item_label": "datadog-process-agent",
                    "failed": True,
                    "msg": "Service 'datadog-process-agent' is not installed (s3cret)",
                },
            ],
        }
    )
    assert summary.failed_message == (
        "One or more items failed\n"
        "item datadog-process-agent: Service 'datadog-process-agent' is not installed (********)"
    )
