"""``dispatcher remove`` and ``dispatcher status`` on taken-back calls, as a user runs them."""

from __future__ import annotations

import json

import pytest

from tests.conftest import base_env, run_cli

pytestmark = pytest.mark.integration


def test_remove_cancels_a_waiting_call_and_refuses_an_unknown_id_in_one_line(
        redis_url: str) -> None:
    env = base_env(redis_url)
    made = run_cli(["enqueue", "--caller", "Jane", "--location", "Route 68",
                    "--description", "Crash"], env)
    assert made.returncode == 0, made.stderr
    call_id = made.stdout.strip()

    removed = run_cli(["remove", call_id], env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"{call_id}  cancelled: it will never be sent"

    again = run_cli(["remove", call_id, "123456", "--json"], env)
    assert again.returncode == 1
    result = json.loads(again.stdout)
    assert result[0] == {"id": call_id, "given": call_id, "status": "cancelled"}
    assert "no call has the id '123456'" in result[1]["error"]
    assert again.stderr.count("\n") == 1 and again.stderr.startswith("dispatcher: error:")

    status = run_cli(["status", call_id, "--json"], env)
    data = json.loads(status.stdout)
    assert (data["status"], data["remove_requested"]) == ("cancelled", False)
    assert data["cancelled_at"] is not None
