"""The Windows tests' stand-in host (tests/windows/winrm_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from golden_image.values import WinrmLogin
from tests.windows.winrm_server import WinrmStandin


@pytest.fixture
def winrm_standin(tmp_path: Path) -> Iterator[tuple[WinrmStandin, WinrmLogin]]:
    """A running stand-in WinRM host and the pinned login a task would get for it."""
    directory = tmp_path / "standin"
    directory.mkdir()
    directory.chmod(0o755)  # Packer runs unprivileged and reads the certificate through SSL_CERT_FILE
    with WinrmStandin(directory=directory) as server:
        yield server, server.login()
