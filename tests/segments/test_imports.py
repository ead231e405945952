"""Static segments from files: Pinpoint CSV/JSON and plain formats; bad files rejected whole."""
from __future__ import annotations

import json
import time

PINPOINT_CSV = """ChannelType,Address,Id,User.UserId,User.UserAttributes.plan,Attributes.interests,Attributes.interests,Metrics.score,Demographic.Platform,Location.Country,Location.Latitude,Location.Longitude,OptOut,EffectiveDate
EMAIL,ann@example.com,ann-mail,ann,pro,golf,tennis,7,,US,47.6,-122.3,NONE,2024-05-01T00:00:00Z
SMS,+14155550100,ann-sms,ann,pro,,,,,US,,,ALL,
PUSH,tok-1,bob-push,bob,free,chess,,2,ios,FR,48.85,2.35,NONE,
APNS_SANDBOX,tok-2,bob-ipad,bob,free,,,,ios,FR,,,NONE,
"""


def test_pinpoint_csv_import_creates_customers_and_segment(api):
    r = api.post("/v1/segments/import", params={"name": "Launch list", "format": "pinpoint", "id": "launch"},
                 content=PINPOINT_CSV.encode())
    assert r.status_code == 201, r.text
    assert r.json()["segment_id"] == "launch" and r.json()["rows"] == 4
    assert api.get("/v1/endpoints/bob-ipad").json()["channel"] == "PUSH"
    ann = api.get("/v1/users/ann").json()
    assert ann["attributes"] == {"plan": "pro"} and ann["segments"] == ["launch"]
    mail = api.get("/v1/endpoints/ann-mail").json()
    assert mail["attributes"] == {"interests": ["golf", "tennis"]} and mail["metrics"] == {"score": 7}
    assert mail["location"]["country"] == "US" and mail["effective_date"].startswith("2024-05-01")
    assert api.get("/v1/endpoints/ann-sms").json()["opt_out"] is True
    seg = api.get("/v1/segments/launch").json()
    assert seg["kind"] == "static" and seg["size"] == 2
    # refine: a dynamic segment over the static one, and a filter on the static segment itself
    r = api.post("/v1/segments", json={"id": "launch-fr", "name": "FR", "rule": {"and": [
        {"in_segment": "launch"},
        {"some": [{"var": "endpoints"}, {"==": [{"var": "location.country"}, "FR"]}]}]}})
    assert r.json()["size"] == 1
    r = api.put("/v1/segments/launch", json={"rule": {"==": [{"var": "attributes.plan"}, "pro"]}})
    assert r.json()["size"] == 1
    near = api.post("/v1/segments", json={"id": "near-paris", "name": "near", "rule": {
        "within_km": {"lat": 48.86, "lon": 2.34, "km": 10}}}).json()
    assert near["size"] == 1


def test_json_and_plain_formats(api):
    docs = [{"ChannelType": "EMAIL", "Address": "c@example.com", "Id": "c1", "User": {"UserId": "carol",
             "UserAttributes": {"tier": ["gold"]}}, "Attributes": {"tags": ["a", "b"]}, "Metrics": {"visits": 3}}]
    r = api.post("/v1/segments/import", params={"name": "json"}, content=json.dumps(docs).encode())
    assert r.status_code == 201, r.text
    assert api.get("/v1/endpoints/c1").json()["attributes"] == {"tags": ["a", "b"]}
    nd = "\n".join(json.dumps({"user_id": f"p{i}", "city": "Lyon"}) for i in range(3))
    r = api.post("/v1/segments/import", params={"name": "plain", "format": "plain"}, content=nd.encode())
    assert r.status_code == 201 and r.json()["rows"] == 3
    assert api.get("/v1/users/p1").json()["attributes"] == {"city": "Lyon"}
    csvp = "user_id,city\nq1,Nice\nq2,Nice\n"
    r = api.post("/v1/segments/import", params={"name": "plaincsv", "format": "plain"}, content=csvp.encode())
    assert api.get(f"/v1/segments/{r.json()['segment_id']}").json()["size"] == 2


def test_json_rows_that_are_not_objects_are_named_and_an_empty_file_refused(api):
    r = api.post("/v1/segments/import", params={"name": "odd", "format": "pinpoint"},
                 content=b'[{"ChannelType": "EMAIL", "Address": "o@example.com", "Id": "o1"}, [null], 7]')
    assert r.status_code == 400, r.text
    assert [(d["row"], d["message"]) for d in r.json()["error"]["details"]] == [
        (2, "a JSON row is an object"), (3, "a JSON row is an object")]
    for params in ({"name": "empty"}, {"name": "empty", "async": "true"}):
        r = api.post("/v1/segments/import", params=params, content=b"")
        assert r.status_code == 400 and r.json()["error"]["field"] == "file", r.text
    assert api.get("/v1/endpoints/o1").status_code == 404


def test_bad_rows_reject_the_whole_file(api):
    bad = PINPOINT_CSV + "EMAIL,not-an-email,x1,xavier,,,,,,,,,,\nFAX,123,x2,,,,,,,,,,,\nEMAIL,z@example.com,z,zed,,,,abc,,,,,,\nIN_APP,q,x3,,,,,,,,,,,\n"
    r = api.post("/v1/segments/import", params={"name": "bad"}, content=bad.encode())
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "import_rejected"
    assert [(d["row"], d["field"]) for d in err["details"]] == [(6, "address"), (7, "ChannelType"), (8, "Metrics.score"),
                                                                      (9, "ChannelType")]
    assert api.get("/v1/users/ann").status_code == 404
    assert api.get("/v1/segments").json()["items"] == []


def test_large_import_runs_as_a_job(api):
    rows = "user_id,n\n" + "".join(f"u{i},{i % 7}\n" for i in range(6000))
    r = api.post("/v1/segments/import", params={"name": "big", "format": "plain"}, content=rows.encode())
    assert r.status_code == 202, r.text
    job = r.json()
    for _ in range(600):
        job = api.get(f"/v1/import-jobs/{job['id']}").json()
        if job["status"] != "running":
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    assert job["rows_done"] == 6000
    assert api.get(f"/v1/segments/{job['segment_id']}").json()["size"] == 6000
    bad = "user_id,n\n" + "".join(f"u{i},{i}\n" for i in range(5999)) + ",7\n"
    job = api.post("/v1/segments/import", params={"name": "bad", "format": "plain", "async": "true"},
                   content=bad.encode()).json()
    for _ in range(600):
        job = api.get(f"/v1/import-jobs/{job['id']}").json()
        if job["status"] != "running":
            break
        time.sleep(0.1)
    assert job["status"] == "failed" and job["errors"] == [{"row": 6001, "field": "user_id", "message": "user_id is required"}]


CHUNKED_HEADER = "ChannelType,Address,Id,User.UserId,User.UserAttributes.plan,Location.Country\n"


def test_an_import_of_several_chunks_merges_repeated_and_existing_customers(api, monkeypatch):
    """Chunks of 60 rows, so users named twice are written by two chunks, and each chunk is large enough
    for PostgreSQL's COPY and array paths (50 rows and more)."""
    from tidings.engine.segments import imports

    monkeypatch.setattr(imports, "CHUNK", 60)
    assert api.put("/v1/users/u3", json={"attributes": {"plan": "x", "team": "a"}}).status_code == 200
    assert api.put("/v1/endpoints/moved", json={"channel": "EMAIL", "address": "old@example.com", "user_id": "old",
                                               "location": {"country": "DE"}}).status_code == 200
    de = {"some": [{"var": "endpoints"}, {"==": [{"var": "location.country"}, "DE"]}]}
    assert api.post("/v1/segments", json={"id": "de", "name": "DE", "rule": de}).json()["size"] == 1
    # u0..u49 twice (rows i and i + 100: other chunks), first as free then as pro; u50..u99 once, free
    rows = [f"EMAIL,user{i}@example.com,ep{i},u{i % 100},{'free' if i < 100 else 'pro'},FR\n" for i in range(150)]
    rows.insert(130, "EMAIL,moved@example.com,moved,u7,pro,FR\n")  # the endpoint changes owner and country
    r = api.post("/v1/segments/import", params={"name": "many", "id": "many"},
                 content=(CHUNKED_HEADER + "".join(rows)).encode())
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == 151
    assert api.get("/v1/segments/many").json()["size"] == 100
    u3 = api.get("/v1/users/u3").json()
    assert u3["attributes"] == {"plan": "pro", "team": "a"} and "many" in u3["segments"]
    assert [e["endpoint_id"] for e in u3["endpoints"]] == ["ep3", "ep103"]
    assert api.get("/v1/users/u70").json()["attributes"] == {"plan": "free"}
    moved = api.get("/v1/endpoints/moved").json()
    assert moved["user_id"] == "u7" and moved["address"] == "moved@example.com"
    # the former owner lost its only DE endpoint, so it left the dynamic segment in the same import
    assert api.get("/v1/segments/de").json()["size"] == 0
    assert api.get("/v1/users/old").json()["segments"] == []


def test_an_import_past_the_endpoint_limit_in_a_later_chunk_writes_nothing(api, monkeypatch):
    from tidings.engine.segments import imports

    monkeypatch.setattr(imports, "CHUNK", 60)
    for n in range(14):
        assert api.put(f"/v1/endpoints/full-{n}", json={"channel": "EMAIL", "address": f"f{n}@example.com",
                                                       "user_id": "full"}).status_code == 200
    rows = [f"EMAIL,user{i}@example.com,ep{i},u{i},free,FR\n" for i in range(100)]
    rows += ["EMAIL,f14@example.com,full-14,full,pro,FR\n", "EMAIL,f15@example.com,full-15,full,pro,FR\n"]
    r = api.post("/v1/segments/import", params={"name": "over", "id": "over"},
                 content=(CHUNKED_HEADER + "".join(rows)).encode())
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "import_rejected" and "at most 15 endpoints" in r.json()["error"]["message"]
    assert api.get("/v1/users/u0").status_code == 404  # written by the first chunk, rolled back
    assert len(api.get("/v1/users/full").json()["endpoints"]) == 14
    assert api.get("/v1/segments/over").status_code == 404
