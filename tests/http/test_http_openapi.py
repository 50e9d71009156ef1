"""The OpenAPI 3.1 document at ``/openapi.json``: served, well-formed, true to the code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator

from dispatcher.http.ingest import MAX_BODY_BYTES, MAX_CALLS_PER_REQUEST
from tests.http.httpkit import V1, Web, seed_body, seed_call

pytestmark = pytest.mark.integration


@pytest.fixture
def spec(shared_web: Web) -> dict[str, Any]:
    answer = requests.get(shared_web.url + "/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    document: dict[str, Any] = answer.json()
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": spec["components"]})


def test_the_document_describes_every_route_and_answer(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    paths = spec["paths"]
    assert set(paths) == {V1, "/v2/emergency/servers/{serverId}/calls/911", "/healthz",
                          "/metrics", "/openapi.json", "/emergency/remove_911",
                          "/v2/emergency/servers/{serverId}/calls/911/{callId}"}
    assert set(paths[V1]["post"]["responses"]) == {"200", "400", "413", "415", "429", "503"}
    assert set(paths["/v2/emergency/servers/{serverId}/calls/911"]["post"]["responses"]) == {
        "200", "400", "401", "413", "415", "429", "503"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "503"}
    assert "Retry-After" in paths[V1]["post"]["responses"]["503"]["headers"]
    request = spec["components"]["schemas"]["CallRequestV1"]
    assert request["properties"]["data"]["maxItems"] == MAX_CALLS_PER_REQUEST
    assert str(MAX_BODY_BYTES) in paths[V1]["post"]["responses"]["413"]["description"]
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for ref in _refs(spec):
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_examples_and_the_seed_body_validate(spec: dict[str, Any]) -> None:
    v1 = spec["paths"][V1]["post"]
    _validator(spec, "CallRequestV1").validate(
        v1["requestBody"]["content"]["application/json"]["example"])
    _validator(spec, "CallRequestV1").validate(json.loads(seed_body([seed_call(0),
                                                                     seed_call(1)])))
    v2 = spec["paths"]["/v2/emergency/servers/{serverId}/calls/911"]["post"]
    _validator(spec, "CallV2").validate(
        v2["requestBody"]["content"]["application/json"]["example"])
    _validator(spec, "Problem").validate(
        v2["responses"]["400"]["content"]["application/problem+json"]["example"])
    # What the document refuses, the door refuses too (the fuzz test checks the other way).
    refused = _validator(spec, "CallRequestV1")
    assert not refused.is_valid(json.loads(seed_body([seed_call(caller="")])))
    assert not refused.is_valid(json.loads(seed_body([seed_call(caller=" \t")])))
    assert not refused.is_valid(json.loads(seed_body([seed_call(location="a\x01")])))
    assert not refused.is_valid(json.loads(seed_body([seed_call(**{"n" * 65: 1})])))
    # Unknown members of a call are kept and sent (dispatcher.callextra); v2 metaData
    # values of any JSON type are sent as their text.
    assert refused.is_valid(json.loads(seed_body([seed_call(priority=1, coords={"x": 1})])))
    assert _validator(spec, "CallV2").is_valid(
        {"caller": "a", "location": "l", "description": "d", "coords": {"x": 1},
         "metaData": {"silentAlert": True, "postal": 350}})
    assert not refused.is_valid(json.loads(seed_body([])))
