"""Fixtures of the FiveM tests (the helpers they share are in fivem_support.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.integrations.fivem_support import INSTALL, Harness


@pytest.fixture(scope="module")
def lua() -> str:
    """The Lua 5.4 interpreter with dkjson; missing tools fail the test (CI must have them)."""
    exe = shutil.which("lua5.4")
    if exe is None:
        pytest.fail(f"lua5.4 is not installed; install it with: {INSTALL}")
    probe = subprocess.run([exe, "-e", "require 'dkjson'"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"the Lua module dkjson is missing; install it with: {INSTALL}")
    return exe


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for h in started:
        h.kill()
