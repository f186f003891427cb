"""Review of the Windows work (issue 10): hostile family files and remote-layer edge cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_windows_content import FAMILY, errors_of, include  # noqa: F401 - the fixture

SUITES = "[validation/pester/Dotnet.Tests.ps1]"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_pester_suite_that_is_no_regular_file_is_refused_at_load(include: Path, kind: str) -> None:  # noqa: F811
    # a FIFO made the validate task (and golden validate --deep) hang in read_bytes(); a
    # directory failed only at validation, after the whole bake
    suite = include / "validation" / "pester" / "Odd.Tests.ps1"
    os.mkfifo(suite) if kind == "fifo" else suite.mkdir()
    errors = errors_of(include, FAMILY.replace(SUITES, "[validation/pester/Odd.Tests.ps1]"))
    assert "validation.pester[0]" in errors and "not a regular file" in errors


@pytest.mark.parametrize("name", ["{{ var.value.x }}.Tests.ps1", "$(calc).Tests.ps1", "a b.Tests.ps1"])
def test_a_pester_suite_name_the_hook_would_refuse_is_refused_at_load(include: Path, name: str) -> None:  # noqa: F811
    (include / "validation" / "pester" / name).write_text("Describe 'x' { It 'y' { 1 | Should -Be 1 } }\n")
    errors = errors_of(include, FAMILY.replace(SUITES, f"['validation/pester/{name}']"))
    assert "validation.pester[0]" in errors and "letters, digits" in errors
