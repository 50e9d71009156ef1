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


def test_status_and_remove_take_the_calls_ticket(redis_url: str) -> None:
    env = base_env(redis_url)
    made = run_cli(["enqueue", "--caller", "Jane", "--location", "Route 68",
                    "--description", "Crash"], env)
    call_id = made.stdout.strip()
    ticket = json.loads(run_cli(["status", call_id, "--json"], env).stdout)["ticket"]
    assert isinstance(ticket, int) and 9 * 10**15 < ticket < 2**53

    by_ticket = run_cli(["status", str(ticket)], env)
    assert by_ticket.returncode == 0, by_ticket.stderr
    assert by_ticket.stdout.startswith(call_id) and f"ticket: {ticket}" in by_ticket.stdout

    removed = run_cli(["remove", str(ticket), "--json"], env)
    assert json.loads(removed.stdout) == [{"id": call_id, "given": str(ticket),
                                           "status": "cancelled"}]
    unknown = run_cli(["status", str(ticket + 1000)], env)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "its ticket" in unknown.stderr
