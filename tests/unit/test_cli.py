"""The `golden` CLI: the pull-request check must fail on any broken family and name it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from golden_image.cli import main

PROJECT = Path(__file__).resolve().parents[2]


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 0
    assert "5 of 5 families valid" in capsys.readouterr().out


def test_validate_reports_the_broken_file_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    shutil.copytree(PROJECT / "include" / "images", images)
    web = images / "debian12-web.yaml"
    web.write_text(web.read_text().replace("schedule:", "shedule:"))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    assert main(["validate", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == ["aws-debian12-base", "debian12-base", "debian12-hardened"]
    [error] = report["errors"]["debian12-web"]
    assert "debian12-web.yaml:10: shedule: unknown field; did you mean 'schedule'?" in error
    [error] = report["errors"]["aws-debian12-web"]  # it extends debian12-web
    assert "extends family 'debian12-web' which has errors of its own" in error
    assert main(["list"]) == 1
    out = capsys.readouterr().out
    assert "debian12-base" in out and "BROKEN" in out


def test_show_resolves_the_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "debian12-web", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dag_id"] == "golden_image__debian12_web"
    assert shown["pointer"] == "/golden/debian12-web/latest"
    assert shown["source"] == {"family": "debian12-base", "local": None, "aws": None}


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no family 'nope'"):
        main(["show", "nope"])


def test_platform_errors_are_one_clear_line(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    assert main(["images", "aws-debian12-base"]) == 2
    err = capsys.readouterr().err
    assert "connection 'aws_default' is missing" in err and "Traceback" not in err
