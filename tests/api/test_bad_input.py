"""Bad input: a 4xx that names the field (or item), and nothing written."""
import pytest


def _error(r, status=400):
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_malformed_json(api):
    e = _error(api.put("/v1/users/u", content=b'{"attributes": ', headers={"Content-Type": "application/json"}))
    assert e["code"] == "malformed_json"
    assert api.get("/v1/users/u").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"metrics": {"spend": "lots"}}, "metrics"),
    ({"attributes": {"plan": {"nested": 1}}}, "attributes"),
    ({"timezone": 5}, "timezone"),
    ({"atributes": {}}, "atributes"),
])
def test_wrong_types_name_the_field(api, body, field):
    e = _error(api.put("/v1/users/u", json=body))
    assert e["field"].startswith(field), e
    assert api.get("/v1/users/u").status_code == 404


@pytest.mark.parametrize("body, field, words", [
    ({"attributes": {"x" * 51: "v"}}, "attributes.", "1-50 characters"),
    ({"attributes": {"name": "v" * 101}}, "attributes.name", "at most 100 characters"),
    ({"attributes": {"many": [str(i) for i in range(51)]}}, "attributes.many", "at most 50 values"),
    ({"timezone": "Moon/Base"}, "timezone", "unknown IANA time zone"),
    ({"locale": "not a locale"}, "locale", "locale"),
])
def test_over_limit_values(api, body, field, words):
    e = _error(api.put("/v1/users/u", json=body))
    assert e["field"].startswith(field) and words in e["message"], e
    assert api.get("/v1/users/u").status_code == 404


@pytest.mark.parametrize("body, field, words", [
    ({"channel": "FAX", "address": "x"}, "channel", "FAX"),
    ({"channel": "EMAIL", "address": "not-an-email"}, "address", "not an email address"),
    ({"channel": "SMS", "address": "0800 123"}, "address", "E.164"),
    ({"channel": "VOICE", "address": "+0123"}, "address", "E.164"),
    ({"channel": "WEBHOOK", "address": "http://example.com/hook"}, "address", "https"),
    ({"channel": "EMAIL"}, "address", "needs channel and address"),
    ({"channel": "EMAIL", "address": "a@b.co", "location": {"latitude": 91}}, "location.latitude", "between -90 and 90"),
])
def test_bad_endpoints(api, body, field, words):
    e = _error(api.put("/v1/endpoints/ep", json=body))
    assert e["field"] == field and words in e["message"], e
    assert api.get("/v1/endpoints/ep").status_code == 404


def test_bad_batch_item_rejects_the_whole_batch(api):
    items = [{"user_id": f"u{i}", "attributes": {"a": "ok"}} for i in range(10)]
    items[3]["attributes"] = {"a": "v" * 101}
    items[7]["timezone"] = "Nowhere/City"
    e = _error(api.post("/v1/users/batch", json={"items": items}))
    assert e["code"] == "batch_rejected"
    assert [(d["index"], d["user_id"], d["field"]) for d in e["details"]] == [(3, "u3", "attributes.a"), (7, "u7", "timezone")]
    assert api.get("/v1/users/u0").status_code == 404


def test_oversized_batch(api):
    items = [{"user_id": f"u{i}"} for i in range(10_001)]
    e = _error(api.post("/v1/users/batch", json={"items": items}))
    assert e["field"] == "items" and "at most 10000" in e["message"]
    assert api.get("/v1/users/u0").status_code == 404


def test_endpoint_batch_with_bad_address_writes_nothing(api):
    items = [{"endpoint_id": "ok", "channel": "EMAIL", "address": "ok@example.com"},
             {"endpoint_id": "bad", "channel": "SMS", "address": "12"}]
    e = _error(api.post("/v1/endpoints/batch", json={"items": items}))
    assert e["details"][0]["endpoint_id"] == "bad"
    assert api.get("/v1/endpoints/ok").status_code == 404


def test_sixteenth_endpoint_is_refused(api):
    items = [{"endpoint_id": f"e{i}", "channel": "EMAIL", "address": f"e{i}@example.com", "user_id": "u"} for i in range(15)]
    assert api.post("/v1/endpoints/batch", json={"items": items}).status_code == 200
    e = _error(api.put("/v1/endpoints/e15", json={"channel": "EMAIL", "address": "x@example.com", "user_id": "u"}))
    assert e["code"] == "limit_exceeded" and "at most 15 endpoints" in e["message"]
    assert len(api.get("/v1/users/u").json()["endpoints"]) == 15


def test_attribute_name_limit_per_workspace(api, other_api):
    for start in range(0, 250, 50):
        attrs = {f"attr{i}": "v" for i in range(start, start + 50)}
        assert api.put(f"/v1/users/u{start}", json={"attributes": attrs}).status_code == 200
    e = _error(api.put("/v1/users/last", json={"attributes": {"one_too_many": "v"}}))
    assert e["code"] == "limit_exceeded" and "at most 250" in e["message"]
    assert api.get("/v1/users/last").status_code == 404
    assert api.put("/v1/users/again", json={"attributes": {"attr7": "reuse is fine"}}).status_code == 200
    assert other_api.put("/v1/users/x", json={"attributes": {"one_too_many": "v"}}).status_code == 200


@pytest.mark.parametrize("event, field", [
    ({"name": "buy"}, "user_id"),
    ({"user_id": "u", "name": "_email.send"}, "name"),
    ({"endpoint_id": "missing", "name": "buy"}, "endpoint_id"),
])
def test_bad_events_write_nothing(api, event, field):
    good = {"id": "good", "user_id": "u", "name": "buy"}
    e = _error(api.post("/v1/events", json={"events": [good, event]}))
    assert e["details"][0]["field"] == field, e
    assert api.get("/v1/events").json()["items"] == []
    assert api.get("/v1/users/u").status_code == 404


def test_bad_timestamp_names_the_event(api):
    events = [{"user_id": "u", "name": "buy"}, {"user_id": "u", "name": "buy", "timestamp": "yesterday"}]
    e = _error(api.post("/v1/events", json={"events": events}))
    assert e["field"] == "events[1].timestamp" or e["field"].endswith(".timestamp"), e
    assert "datetime" in e["message"]
    assert api.get("/v1/events").json()["items"] == []


def test_attribute_name_limit_counts_known_names_once(api):
    """A write of known names with one new name past the limit is refused, saying how many exist and how many
    this write adds (the known ones are not counted again); a write of known names only goes through."""
    for start in range(0, 250, 50):
        attrs = {f"attr{i}": "v" for i in range(start, start + 50)}
        assert api.put(f"/v1/users/u{start}", json={"attributes": attrs}).status_code == 200
    e = _error(api.put("/v1/users/mixed", json={"attributes": {"attr1": "a", "attr249": "b", "brand_new": "c"}}))
    assert e["code"] == "limit_exceeded" and e["field"] == "attribute"
    assert "250 exist and this write adds 1 (brand_new...)" in e["message"]
    assert api.put("/v1/users/mixed", json={"attributes": {"attr1": "a", "attr249": "b"}}).status_code == 200


def test_one_batch_of_more_new_names_than_the_limit_is_refused(api):
    items = [{"user_id": f"u{n}", "attributes": {f"a{n}_{i}": "v" for i in range(150)}} for n in range(2)]
    e = _error(api.post("/v1/users/batch", json={"items": items}))
    assert e["code"] == "limit_exceeded" and "0 exist and this write adds 300" in e["message"]
    assert api.get("/v1/users/u0").status_code == 404
