"""The read-back and the removal over the real network path, against the simulator:
`CadClient.read_calls` and `CadClient.remove` in v1 and v2, every answer shape the CAD
may give (both letter cases of v2's keys, v1 without metaData), and the ambiguity of a
lost answer as a real socket shows it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dispatcher.cad import CadClient
from dispatcher.call import Call
from dispatcher.errors import Ambiguous, PermanentError, RateLimited, RetryableError
from dispatcher.readback import Candidate, match
from dispatcher.settings import Secret, Settings
from dispatcher.simulator import CadSimulator
from tests.conftest import API_KEY, COMMUNITY, SEED_CALL

pytestmark = pytest.mark.integration


def client(sim: CadSimulator, version: int, **overrides: Any) -> CadClient:
    return CadClient(Settings(api_url=sim.url, community_id=COMMUNITY, api_key=Secret(API_KEY),
                              read_timeout_s=0.5, connect_timeout_s=0.5, api_version=version,
                              **overrides))


def made(i: int) -> Call:
    return Call.parse({**SEED_CALL, "caller": f"Caller {i}"}).with_envelope(
        f"01JCALL{i:019d}", 1_700_000_000.0)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("casing", ["pascal", "camel"])
def test_the_list_holds_what_we_sent_with_our_tag(
        sim: CadSimulator, version: int, casing: str) -> None:
    sim.set_readback(v2_casing=casing)
    cad = client(sim, version)
    sent = [made(i) for i in range(3)]
    ids = [cad.send(c).cad_call_id for c in sent]

    listed = cad.read_calls(None)

    found = match([Candidate(c.id, c.to_cad()) for c in sent], listed, set())
    assert found == {c.id: cad_id for c, cad_id in zip(sent, ids, strict=True)}
    assert all(e["metaData"]["dispatcherQueuedAt"] == "2023-11-14T22:13:20.000Z"
               for e in listed)


def test_v1_without_metadata_matches_on_the_fields(sim: CadSimulator) -> None:
    sim.set_readback(v1_metadata=False)
    cad = client(sim, 1)
    call = made(1)
    cad_id = cad.send(call).cad_call_id
    listed = cad.read_calls(None)
    assert "metaData" not in listed[0]
    assert match([Candidate(call.id, call.to_cad())], listed, set()) == {call.id: cad_id}
    assert match([Candidate(call.id, call.to_cad())], listed, {str(cad_id)}) == {}, \
        "a CAD id that is already another of our calls is not taken twice"


@pytest.mark.parametrize("version", [1, 2])
def test_a_converted_or_expired_call_is_no_longer_listed(sim: CadSimulator, version: int) -> None:
    cad = client(sim, version)
    converted = int(cad.send(made(1)).cad_call_id or 0)
    expiring = Call.parse({**SEED_CALL, "deleteAfterMinutes": 5}).with_envelope(
        "01JEXP", time.time())
    cad.send(expiring)
    sim.convert(converted)
    sim.advance(301)
    assert cad.read_calls(None) == []


@pytest.mark.parametrize("version", [1, 2])
def test_no_plus_plan_is_a_permanent_refusal(sim: CadSimulator, version: int) -> None:
    sim.set_readback(enabled=False)
    with pytest.raises(PermanentError) as caught:
        client(sim, version).read_calls(None)
    if version == 1:
        assert "API ENDPOINT IS NOT ENABLED FOR THIS COMMUNITY" in str(caught.value)


def test_v2_read_backs_have_their_own_budget(sim: CadSimulator) -> None:
    cad = client(sim, 2)
    for _ in range(5):
        cad.read_calls(None)
    with pytest.raises(RateLimited) as caught:
        cad.read_calls(None)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    cad.send(made(1))  # creating calls is a budget of its own


@pytest.mark.parametrize("kind", ["commit_then_hang", "commit_then_drop"])
@pytest.mark.parametrize("version", [1, 2])
def test_an_answer_lost_after_creation_is_ambiguous_and_the_list_has_the_call(
        sim: CadSimulator, version: int, kind: str) -> None:
    cad = client(sim, version)
    call = made(1)
    sim.set_fault(kind, count=1, route="create", max_s=5)
    with pytest.raises(Ambiguous):
        cad.send(call)
    assert match([Candidate(call.id, call.to_cad())], cad.read_calls(None), set()) == {
        call.id: str(sim.calls()[0]["cad_id"])}


def test_a_refused_connection_is_not_ambiguous(sim: CadSimulator) -> None:
    sim.set_fault("refuse")
    with pytest.raises(RetryableError) as caught:
        client(sim, 1).send(made(1))
    assert type(caught.value) is RetryableError


@pytest.mark.parametrize("version", [1, 2])
def test_remove_takes_the_call_out_of_the_list_and_twice_is_harmless(
        sim: CadSimulator, version: int) -> None:
    cad = client(sim, version)
    call = made(1)
    cad_id = cad.send(call).cad_call_id or ""
    assert cad.remove(call, cad_id).cad_call_id == cad_id
    assert cad.read_calls(None) == []
    assert sim.calls()[0]["ended"] == "removed"
    # v1 answers 200 whatever; v2 answers 404 for a call that is gone: both are done.
    assert cad.remove(call, cad_id).cad_call_id == cad_id


def test_a_removal_with_a_wrong_key_is_permanent(sim: CadSimulator) -> None:
    cad = client(sim, 1)
    call = made(1)
    cad_id = cad.send(call).cad_call_id or ""
    sim.set_credentials(api_key="rotated")
    with pytest.raises(PermanentError, match="INVALID API KEY"):
        cad.remove(call, cad_id)


@pytest.mark.parametrize("version", [1, 2])
def test_a_long_list_is_read_whole(sim: CadSimulator, version: int) -> None:
    # 400 active calls: well over the 64 KiB an answer to a create may have.
    sim.set_readback(v2_casing="camel")
    cad = client(sim, version)
    sent = [made(i) for i in range(400)]
    for c in sent:
        cad.send(c)
    listed = cad.read_calls(None)
    assert len(listed) == 400
    assert len(match([Candidate(c.id, c.to_cad()) for c in sent], listed, set())) == 400
