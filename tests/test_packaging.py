"""The distribution installs and runs with its runtime dependencies only (no dev extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_runtime_install_imports_every_process(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # The worker needs kombu's Redis transport (and its own imports) at start-up; a missing
    # dependency there only shows when no dev tool happens to bring it along.
    env = {"SONORAN_COMMUNITY_ID": "c", "SONORAN_API_KEY": "k", "PATH": "/usr/bin:/bin"}
    probe = subprocess.run(
        [str(py), "-c", "import importlib, pkgutil, dispatcher, kombu.transport.redis, "
         "workers.tasks\n"
         "for m in pkgutil.iter_modules(dispatcher.__path__):\n"
         "    if m.name != '__main__': importlib.import_module('dispatcher.' + m.name)\n"
         "print('ok')"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert probe.stdout.strip() == "ok", probe.stderr[-2000:]
    cli = subprocess.run([str(venv / "bin" / "dispatcher"), "--help"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=60)
    assert cli.returncode == 0 and "simulate-cad" in cli.stdout
