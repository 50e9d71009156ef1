"""Fixtures of the simulator tests: a started simulator (servers 1 and 7) and a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from dispatcher.simulator import CadSimulator
from tests.simulator.simkit import COMMUNITY, KEY


@pytest.fixture
def sim() -> Iterator[CadSimulator]:
    with CadSimulator(community_id=COMMUNITY, api_key=KEY, server_ids=("1", "7")) as simulator:
        yield simulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s
