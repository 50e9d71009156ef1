"""The CLI's entry point (dispatcher/cli/main.py): what needs no Redis."""

from __future__ import annotations

import pytest

from dispatcher import __version__
from dispatcher.cli.main import build_parser


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"dispatcher {__version__}"
