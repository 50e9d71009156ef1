"""dispatcher.call: both input shapes, the seed's wire shape, validation naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.call import (
    FLAT_FIELDS,
    MAX_CALL_BYTES,
    MAX_CALLER,
    MAX_DESCRIPTION,
    MAX_EXTRA_FIELDS,
    MAX_EXTRA_NAME,
    MAX_IDEMPOTENCY_KEY,
    MAX_LOCATION,
    MAX_META_KEY,
    MAX_META_KEYS,
    MAX_PLATE,
    MAX_POSTAL,
    MAX_SERVER_ID,
    SCHEMA_VERSION,
    SEED_FIELDS,
    Call,
    new_call_id,
)
from dispatcher.errors import InvalidCall
from tests.conftest import SEED_CALL

FLAT: dict[str, Any] = {
    "caller": "Jane Doe",
    "location": "Route 68 / Joshua Rd",
    "description": "Two-car collision",
    "postal": "350",
    "plate": "8ABC123",
    "serverId": "1",
    "isEmergency": True,
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


_DROP = object()


# -- shapes ------------------------------------------------------------------------------


def test_flat_and_seed_forms_parse_to_the_same_call() -> None:
    assert Call.parse(FLAT) == Call.parse(SEED_CALL)


def test_the_producer_shape_is_the_flat_form() -> None:
    made = Call.create(caller="Jane Doe", location="Route 68 / Joshua Rd",
                       description="Two-car collision", postal="350", plate="8ABC123",
                       server_id="1", is_emergency=True)

    assert made == Call.parse(SEED_CALL)


def test_to_cad_is_exactly_the_seed_call_object() -> None:
    body = Call.parse(FLAT).to_cad()

    assert body == SEED_CALL
    assert list(body) == ["serverId", "isEmergency", "caller", "location", "description",
                          "metaData"]
    assert json.loads(json.dumps(body)) == SEED_CALL


def test_to_cad_uses_the_configured_server_id_only_when_the_call_has_none() -> None:
    bare = Call.parse(with_(FLAT, serverId=_DROP))

    assert "serverId" not in bare.to_cad()
    assert bare.to_cad("1")["serverId"] == "1"
    assert Call.parse(with_(FLAT, serverId=7)).to_cad("1")["serverId"] == 7


def test_server_id_keeps_the_type_it_was_given() -> None:
    assert Call.parse(with_(SEED_CALL, serverId=1)).to_cad()["serverId"] == 1
    assert Call.parse(with_(SEED_CALL, serverId="1")).to_cad()["serverId"] == "1"


def test_custom_metadata_keys_are_kept() -> None:
    meta = {"postal": "7015a", "callerPlayerId": 12, "silentAlert": False, "uuid": "ab-12",
            "priority": 2, "x": 101.5, "y": -33.25}

    body = Call.parse(with_(SEED_CALL, metaData=meta)).to_cad()

    assert body["metaData"] == meta


def test_flat_postal_and_plate_join_the_custom_metadata() -> None:
    body = Call.parse(with_(FLAT, metaData={"block": "A"})).to_cad()

    assert body["metaData"] == {"block": "A", "postal": "350", "plate": "8ABC123"}


@pytest.mark.parametrize("form", ["flat", "seed"])
def test_an_integer_postal_becomes_a_string(form: str) -> None:
    obj = (with_(FLAT, postal=2000) if form == "flat"
           else with_(SEED_CALL, metaData={"postal": 2000}))

    assert Call.parse(obj).to_cad()["metaData"]["postal"] == "2000"


def test_optional_fields_have_defaults() -> None:
    call = Call.parse({"caller": "c", "location": "l", "description": "d"})

    assert call.is_emergency is True
    assert call.to_cad() == {"isEmergency": True, "caller": "c", "location": "l",
                             "description": "d", "metaData": {}}


def test_civil_calls_and_delete_after_minutes() -> None:
    body = Call.parse(with_(SEED_CALL, isEmergency=False, deleteAfterMinutes=30)).to_cad()

    assert body["isEmergency"] is False
    assert body["deleteAfterMinutes"] == 30


def test_tab_and_newline_are_allowed() -> None:
    assert Call.parse(with_(SEED_CALL, description="line one\n\tline two\r\n")).description


def test_the_same_postal_given_twice_is_fine() -> None:
    obj = with_(FLAT, metaData={"postal": "350"})

    assert Call.parse(obj).to_cad()["metaData"]["postal"] == "350"


# -- validation: every error names its field -----------------------------------------------


def _field_of(obj: Any) -> str | None:
    with pytest.raises(InvalidCall) as info:
        Call.parse(obj)
    assert isinstance(info.value, ValueError)
    assert str(info.value)
    return info.value.field


@pytest.mark.parametrize("name", ["caller", "location", "description"])
@pytest.mark.parametrize("value", [_DROP, None, "", "   ", 5, True, ["x"], {"a": 1}])
def test_required_text_fields(name: str, value: Any) -> None:
    assert _field_of(with_(SEED_CALL, **{name: value})) == name


@pytest.mark.parametrize("value", ["yes", 1, 0, None, "true"])
def test_is_emergency_must_be_a_boolean(value: Any) -> None:
    assert _field_of(with_(SEED_CALL, isEmergency=value)) == "isEmergency"


@pytest.mark.parametrize("value", [True, -1, 2**31, "", "   ", "x" * (MAX_SERVER_ID + 1), 1.5,
                                   [1], {"id": 1}, "1\x00"])
def test_bad_server_ids(value: Any) -> None:
    assert _field_of(with_(SEED_CALL, serverId=value)) == "serverId"


# -- unknown members: kept and sent as they came ------------------------------------------

OFFICIAL_EXTRAS: dict[str, Any] = {"coords": {"x": 215.3, "y": -810.1, "z": 30.7},
                                   "priority": 1, "tags": ["a", None], "flag": None}


@pytest.mark.parametrize("form", ["flat", "seed"])
def test_unknown_top_level_fields_are_kept_and_sent(form: str) -> None:
    base = FLAT if form == "flat" else SEED_CALL
    call = Call.parse({**base, **OFFICIAL_EXTRAS})
    assert call.unknown_fields == ("coords", "flag", "priority", "tags")
    body = call.to_cad()
    for name, value in OFFICIAL_EXTRAS.items():
        assert body[name] == value
    sent = call.with_envelope("01J0000000000000000000000A", 1.0).as_sent(now=2.0)
    assert sent["coords"] == OFFICIAL_EXTRAS["coords"]
    assert Call.parse(base).unknown_fields == ()


def test_extras_survive_the_spool_and_the_record() -> None:
    call = Call.parse({**SEED_CALL, **OFFICIAL_EXTRAS}).with_envelope("X", 5.0)
    back = Call.from_dict(json.loads(json.dumps(call.to_dict())))
    assert dict(back.extra) == OFFICIAL_EXTRAS
    record = Call.parse(json.loads(json.dumps(call.to_cad())))  # what the worker rebuilds
    assert record.to_cad() == call.to_cad()


def test_an_extra_never_overrides_a_known_field() -> None:
    call = Call(caller="a", location="b", description="c", server_id=7,
                extra={"caller": "evil", "serverId": 9, "metaData": {}, "coords": 1})
    body = call.to_cad()
    assert (body["caller"], body["serverId"], body["coords"]) == ("a", 7, 1)


@pytest.mark.parametrize(("given", "minutes"), [({"deleteAfter": 30}, 30),
                                                ({"deleteAfter": 30, "deleteAfterMinutes": 5}, 5),
                                                ({"deleteAfter": None}, None)])
def test_delete_after_is_renamed_as_the_official_resource_does(given: dict[str, Any],
                                                               minutes: int | None) -> None:
    call = Call.parse({**SEED_CALL, **given})
    assert call.delete_after_minutes == minutes
    assert "deleteAfter" not in call.to_cad() and call.unknown_fields == ()


def test_delete_after_is_validated_as_delete_after_minutes() -> None:
    assert _field_of(with_(SEED_CALL, deleteAfter="10")) == "deleteAfterMinutes"
    assert _field_of(with_(SEED_CALL, deleteAfter=-1)) == "deleteAfterMinutes"


def test_extra_names_and_count_are_bounded() -> None:
    ok = {f"f{i}": i for i in range(MAX_EXTRA_FIELDS)}
    assert len(Call.parse({**SEED_CALL, **ok}).unknown_fields) == MAX_EXTRA_FIELDS
    with pytest.raises(InvalidCall, match="unknown fields, more than"):
        Call.parse({**SEED_CALL, **ok, "one_more": 1})
    Call.parse({**SEED_CALL, "n" * MAX_EXTRA_NAME: 1})
    for bad in ("n" * (MAX_EXTRA_NAME + 1), "", "a\x00b"):
        with pytest.raises(InvalidCall, match="name"):
            Call.parse({**SEED_CALL, bad: 1})


def test_extras_count_towards_the_size_limit() -> None:
    with pytest.raises(InvalidCall, match="more than") as info:
        Call.parse({**SEED_CALL, "blob": "x" * MAX_CALL_BYTES})
    assert info.value.field == "blob"
    with pytest.raises(InvalidCall, match="plain JSON"):
        Call.parse({**SEED_CALL, "n": float("nan")})


def test_create_takes_extras_by_their_json_names() -> None:
    call = Call.create(caller="a", location="b", description="c",
                       extra={"coords": {"x": 1}, "deleteAfter": 3})
    assert call.to_cad()["coords"] == {"x": 1} and call.delete_after_minutes == 3
    with pytest.raises(InvalidCall, match="known field"):
        Call.create(caller="a", location="b", description="c", extra={"caller": "x"})


@pytest.mark.parametrize(
    ("name", "limit"),
    [("caller", MAX_CALLER), ("location", MAX_LOCATION), ("description", MAX_DESCRIPTION),
     ("postal", MAX_POSTAL), ("plate", MAX_PLATE), ("idempotencyKey", MAX_IDEMPOTENCY_KEY)],
)
def test_too_long_fields(name: str, limit: int) -> None:
    assert Call.parse(with_(FLAT, **{name: "a" * limit}))  # the limit itself is fine
    assert _field_of(with_(FLAT, **{name: "a" * (limit + 1)})) == name


def test_too_many_metadata_keys() -> None:
    ok = {f"k{i}": i for i in range(MAX_META_KEYS)}
    assert Call.parse(with_(SEED_CALL, metaData=ok))

    assert _field_of(with_(SEED_CALL, metaData={**ok, "one_more": 1})) == "metaData"


@pytest.mark.parametrize(
    "meta",
    [[1, 2], "postal 350", 5, {"": 1}, {"k" * (MAX_META_KEY + 1): 1}, {"v": float("nan")},
     {"v": float("inf")}, {"v": object()}],
)
def test_bad_metadata(meta: Any) -> None:
    assert _field_of(with_(SEED_CALL, metaData=meta)) == "metaData"


@pytest.mark.parametrize("value", [1.5, True, ["350"], {"p": 1}])
def test_bad_postal(value: Any) -> None:
    assert _field_of(with_(FLAT, postal=value)) == "postal"
    assert _field_of(with_(SEED_CALL, metaData={"postal": value})) == "postal"


def test_postal_given_twice_differently() -> None:
    assert _field_of(with_(FLAT, metaData={"postal": "999"})) == "postal"


@pytest.mark.parametrize(
    "name", ["caller", "location", "description", "postal", "plate", "serverId", "idempotencyKey"]
)
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_control_characters_are_refused(name: str, char: str) -> None:
    assert _field_of(with_(FLAT, **{name: f"ab{char}cd"})) == name


@pytest.mark.parametrize("value", ["10", -1, True, 1.0, 525_601])
def test_bad_delete_after_minutes(value: Any) -> None:
    assert _field_of(with_(SEED_CALL, deleteAfterMinutes=value)) == "deleteAfterMinutes"


@pytest.mark.parametrize("value", ["", "  ", 5, ["k"]])
def test_bad_idempotency_key(value: Any) -> None:
    assert _field_of(with_(FLAT, idempotencyKey=value)) == "idempotencyKey"


@pytest.mark.parametrize("value", [None, [], "call", 5, True, [SEED_CALL]])
def test_a_call_must_be_an_object(value: Any) -> None:
    with pytest.raises(InvalidCall, match="JSON object"):
        Call.parse(value)


def _oversized() -> dict[str, Any]:
    # Every field within its own limit, but the call as a whole is too big.
    meta = {f"note{i}": "n" * 400 for i in range(45)}
    obj = with_(SEED_CALL, metaData=meta)
    assert len(json.dumps(obj).encode()) > MAX_CALL_BYTES
    return obj


def test_a_whole_call_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(InvalidCall, match=str(MAX_CALL_BYTES)):
        Call.parse(_oversized())


def test_the_byte_limit_counts_utf8_bytes_not_characters() -> None:
    # 4-byte characters: each text field is within its character limit.
    obj = with_(SEED_CALL, caller="\U0001f6a8" * MAX_CALLER, location="\U0001f6a8" * MAX_LOCATION,
                description="\U0001f6a8" * MAX_DESCRIPTION)

    with pytest.raises(InvalidCall, match=str(MAX_CALL_BYTES)):
        Call.parse(obj)


def test_the_byte_limit_error_names_a_field() -> None:
    assert _field_of(_oversized()) == "metaData"


def test_a_lone_surrogate_is_an_invalid_call() -> None:
    obj = json.loads('{"caller": "\\ud800", "location": "l", "description": "d"}')

    assert _field_of(obj) == "caller"


def test_deeply_nested_metadata_is_an_invalid_call() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(5000):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt

    assert _field_of(with_(SEED_CALL, metaData={"x": deep})) == "metaData"


# -- envelope ----------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json() -> None:
    call = Call.parse(with_(FLAT, idempotencyKey="game-42", deleteAfterMinutes=5))
    stamped = call.with_envelope("01HZZZZZZZZZZZZZZZZZZZZZZZ", 1_700_000_000.25)

    data = json.loads(json.dumps(stamped.to_dict()))

    assert data["v"] == SCHEMA_VERSION
    assert data["id"] == stamped.id
    assert data["call"] == stamped.to_cad()
    assert Call.from_dict(data) == stamped


def test_from_dict_refuses_another_schema_version() -> None:
    data = Call.parse(SEED_CALL).to_dict()
    data["v"] = SCHEMA_VERSION + 1

    with pytest.raises(InvalidCall) as info:
        Call.from_dict(data)
    assert info.value.field == "v"


def test_from_dict_validates_the_call_again() -> None:
    data = Call.parse(SEED_CALL).to_dict()
    data["call"]["caller"] = ""

    with pytest.raises(InvalidCall) as info:
        Call.from_dict(data)
    assert info.value.field == "caller"


def test_the_envelope_never_holds_credentials() -> None:
    data = Call.parse(SEED_CALL).with_envelope("id1", 1.0).to_dict()

    assert set(data) == {"v", "id", "call", "idempotency_key", "enqueued_at"}
    assert "key" not in data["call"]


# -- ids ---------------------------------------------------------------------------------


def test_ids_are_26_crockford_characters_and_unique() -> None:
    ids = [new_call_id() for _ in range(2000)]

    assert all(len(i) == 26 for i in ids)
    assert all(set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_sort_by_creation_time() -> None:
    times = [1_700_000_000.0 + i * 0.001 for i in range(300)] + [2_000_000_000.0, 1_000.0]
    ids = {new_call_id(t): t for t in times}

    assert [ids[i] for i in sorted(ids)] == sorted(times)


# -- properties --------------------------------------------------------------------------

_text_chars = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n")


def _text(limit: int) -> st.SearchStrategy[str]:
    return st.text(_text_chars, min_size=1, max_size=min(limit, 40)).filter(lambda s: s.strip())


_scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(_text_chars, max_size=20))
_meta = st.dictionaries(
    st.text(_text_chars, min_size=1, max_size=MAX_META_KEY).filter(
        lambda k: k not in ("postal", "plate")),
    _scalars, max_size=8,
)


@st.composite
def valid_calls(draw: st.DrawFn) -> Call:
    obj: dict[str, Any] = {
        "caller": draw(_text(MAX_CALLER)),
        "location": draw(_text(MAX_LOCATION)),
        "description": draw(_text(MAX_DESCRIPTION)),
        "isEmergency": draw(st.booleans()),
        "metaData": draw(_meta),
    }
    if draw(st.booleans()):
        obj["serverId"] = draw(st.integers(0, 2**31 - 1) | _text(MAX_SERVER_ID))
    if draw(st.booleans()):
        obj["postal"] = draw(st.integers(0, 10**9) | _text(MAX_POSTAL))
    if draw(st.booleans()):
        obj["plate"] = draw(_text(MAX_PLATE))
    if draw(st.booleans()):
        obj["deleteAfterMinutes"] = draw(st.integers(0, 525_600))
    if draw(st.booleans()):
        obj["idempotencyKey"] = draw(_text(MAX_IDEMPOTENCY_KEY))
    call = Call.parse(obj)
    return call.with_envelope(new_call_id(draw(st.floats(0, 4e9))),
                              draw(st.floats(0, 4e9, allow_nan=False)))


@settings(max_examples=100, deadline=None, database=None)
@given(valid_calls())
def test_valid_calls_survive_to_dict_from_dict_unchanged(call: Call) -> None:
    travelled = json.loads(json.dumps(call.to_dict(), ensure_ascii=False))

    assert Call.from_dict(travelled) == call
    assert Call.parse(call.to_cad()).to_cad() == call.to_cad()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
_field_names = st.sampled_from(sorted(FLAT_FIELDS | SEED_FIELDS))
_call_like = st.dictionaries(_field_names | st.text(max_size=5), _json, max_size=10)
#: A valid call with one field replaced by any JSON value: reaches every check.
_mutated = st.tuples(valid_calls(), _field_names, _json).map(
    lambda t: {**t[0].to_cad(), t[1]: t[2]})


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_json | _call_like | _mutated)
def test_parse_raises_only_invalid_call(value: Any) -> None:
    try:
        call = Call.parse(value)
    except InvalidCall as exc:
        assert str(exc)
        return
    assert Call.parse(call.to_cad()).to_cad() == call.to_cad()
