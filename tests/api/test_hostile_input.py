"""Hostile input through the real API: each answer is a 4xx naming the field, row or line, never a 500;
a 500 that does happen is logged with its traceback and answered in the error shape with a request id."""
from __future__ import annotations

import base64
import logging
import tempfile
import time

import pytest

from tidings.engine.channels.hookspecs import hookimpl
from tidings.engine.channels.plugin_manager import get_plugin_manager

BIG = "18446744073709551616"  # 2**64


def _error(r, status=400):
    assert r.status_code == status, r.text
    return r.json()["error"]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _nested_rule(depth: int) -> str:
    return '{"and":[' * depth + '{"==":[1,1]}' + "]}" * depth


@pytest.fixture
def segment(api):
    assert api.post("/v1/segments", json={"id": "s", "name": "s", "rule": {"==": [1, 1]}}).status_code == 201


@pytest.mark.parametrize("path, field", [
    (f"/v1/journeys/j/metrics?version={BIG}", "version"),
    (f"/v1/journeys/j/funnel?version=-{BIG}", "version"),
    (f"/v1/events?limit={BIG}", "limit"),
    (f"/v1/events?cursor={_cursor('i' + BIG)}", "cursor"),
    (f"/v1/events?cursor={_cursor('i-' + BIG)}", "cursor"),
    (f"/v1/outbox?cursor={_cursor('i' + BIG)}", "cursor"),
    (f"/v1/segments/s/members?cursor={_cursor('i' + BIG)}", "cursor"),
    (f"/v1/events/stream?after={BIG}", "after"),
])
def test_integers_past_64_bits_in_queries_and_cursors(api, segment, path, field):
    e = _error(api.get(path))
    assert e["field"] == field, e


def test_last_event_id_past_64_bits(api):
    e = _error(api.get("/v1/events/stream", headers={"Last-Event-ID": BIG}))
    assert e["field"] == "Last-Event-ID"


@pytest.mark.parametrize("depth", [40, 200, 2000])
def test_deep_rules_are_refused_naming_the_rule(api, depth):
    r = api.post("/v1/segments", content='{"id":"deep","name":"d","rule":' + _nested_rule(depth) + "}",
                 headers={"Content-Type": "application/json"})
    e = _error(r)
    assert e["field"].startswith("rule"), e
    assert "32 levels" in e["message"]
    assert api.get("/v1/segments/deep").status_code == 404


def test_a_rule_within_the_limit_is_accepted(api):
    r = api.post("/v1/segments", content='{"id":"ok","name":"d","rule":' + _nested_rule(10) + "}",
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("depth", [200, 2000])
@pytest.mark.parametrize("body, field", [
    ('{"events":[{"user_id":"u","name":"x","attributes":{"a":%s}}]}', "attributes.a"),
    ('{"channel":"EMAIL","content":{"subject":"s","text":"t"},"recipients":[{"address":"a@b.co"}],"data":{"d":%s}}',
     "data.d"),
])
def test_deep_documents_are_refused_naming_the_field(api, depth, body, field):
    path = "/v1/events" if "events" in body else "/v1/messages"
    r = api.post(path, content=body % ("[" * depth + "]" * depth), headers={"Content-Type": "application/json"})
    e = _error(r)
    named = e["field"] or e["details"][0]["field"]
    assert field.split(".")[0] in named, e
    assert api.get("/v1/events").json()["items"] == []


def test_deep_user_attributes_name_the_field(api):
    r = api.put("/v1/users/u", content='{"attributes": {"a": ' + "[" * 2000 + "]" * 2000 + "}}",
                headers={"Content-Type": "application/json"})
    e = _error(r)
    assert e["field"].startswith("attributes"), e
    assert api.get("/v1/users/u").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"metrics": {"n": 2**64}}, "metrics.n"),
    ({"attributes": {"plan": "a\x00b"}}, "attributes.plan"),
])
def test_out_of_range_values_name_the_field(api, body, field):
    e = _error(api.put("/v1/users/u", json=body))
    assert e["field"] == field, e
    assert api.get("/v1/users/u").status_code == 404


def test_an_event_with_a_nul_or_a_huge_integer_writes_nothing(api):
    e = _error(api.post("/v1/events", json={"events": [{"user_id": "u", "name": "x\x00"}]}))
    assert e["field"] == "events[0].name"
    e = _error(api.post("/v1/events", json={"events": [{"user_id": "u", "name": "x", "attributes": {"n": 2**70}}]}))
    assert e["details"][0]["field"] == "attributes.n"
    assert api.get("/v1/events").json()["items"] == []


@pytest.mark.parametrize("path, method", [("/v1/users/u", "put"), ("/v1/events", "post"), ("/v1/segments", "post"),
                                          ("/v1/templates/t", "put"), ("/v1/messages", "post")])
def test_invalid_utf8_in_a_json_body(api, path, method):
    r = getattr(api, method)(path, content=b'{"attributes": {"a": "\xff"}}', headers={"Content-Type": "application/json"})
    e = _error(r)
    assert e["code"] == "invalid_encoding" and e["field"] == "body" and "0xff" in e["message"]


@pytest.mark.parametrize("text, words", [
    ("{% if 1 %}" * 500 + "{% endif %}" * 500, "nested too deeply"),
    ("{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "nested too deeply"),
])
def test_templates_nested_500_deep(api, text, words):
    e = _error(api.put("/v1/templates/t", json={"channel": "EMAIL", "subject": "s", "text": text}))
    assert e["field"] == "text" and words in e["message"], e
    assert api.get("/v1/templates/t").status_code == 404


def test_segment_window_past_a_century(api):
    rule = {"performed": {"event": "buy", "within": f"{BIG}d"}}
    e = _error(api.post("/v1/segments", json={"id": "w", "name": "w", "rule": rule}))
    assert e["field"] == "rule/performed/within", e


# ---- YAML ---------------------------------------------------------------------------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9))


def test_billion_laughs_journey_is_refused_at_its_line(api):
    assert len(LAUGHS) < 520
    t = time.monotonic()
    r = api.put("/v1/journeys/j", content=LAUGHS)
    e = _error(r)
    assert time.monotonic() - t < 2
    assert e["code"] == "invalid_journey" and "aliases expand" in e["message"], e
    line = int(e["field"].split(":")[0])
    assert 2 <= line <= 10, e  # the alias that crosses the bound, not "somewhere"
    assert api.get("/v1/journeys/j").status_code == 404


def test_billion_laughs_after_other_documents_is_refused(api):
    """Each document of a file is counted on its own, with nothing remembered from the ones before."""
    filler = "".join(f"k{i}: &a{i} [x]\nm{i}: *a{i}\n" for i in range(2000))
    text = f"{filler}---\n{filler}---\n{LAUGHS}"
    t = time.monotonic()
    r = api.post("/v1/journeys/validate", content=text)
    assert time.monotonic() - t < 10
    assert r.status_code == 200 and any("aliases expand" in e["message"] for e in r.json()["errors"]), r.text


def test_a_few_aliases_are_fine(api):
    r = api.post("/v1/journeys/validate", content="defaults: &d {a: 1}\nsame: *d\nkind: Journey\n")
    assert r.status_code == 200
    assert all("alias" not in e["message"] for e in r.json()["errors"])


@pytest.mark.parametrize("text", ["x: " + "[" * 2000 + "]" * 2000, "x: " + "{a: " * 300 + "1" + "}" * 300,
                                  "x:\n" + "".join("  " * i + "- \n" for i in range(200))])
def test_deep_yaml_is_refused_at_its_line_quickly(api, text):
    t = time.monotonic()
    r = api.post("/v1/journeys/validate", content=text)
    assert time.monotonic() - t < 2
    assert r.status_code == 200, r.text
    errors = r.json()["errors"]
    assert errors and "nests more than 64 levels" in errors[0]["message"], errors
    assert errors[0]["line"] >= 1


# ---- imports ------------------------------------------------------------------------------------------

def _import(api, body: bytes, fmt="plain"):
    return api.post(f"/v1/segments/import?name=imp&format={fmt}", content=body)


@pytest.mark.parametrize("body, row, words", [
    (b"user_id,plan\nu1,a\nu2,b\xffc\nu3,c\n", 3, "0xff"),
    (b"user_id,plan\nu1,a\nu2," + b"x" * 200_000 + b"\nu3,c\n", 3, "longer than"),
    (b'{"user_id": "u1", "plan": "a"}\n{"user_id": "u2", "plan": "\xff"}\n', 2, "0xff"),
])
def test_bad_import_rows_are_named(api, body, row, words):
    e = _error(_import(api, body))
    assert e["code"] == "import_rejected", e
    assert [d["row"] for d in e["details"]] == [row] and words in e["details"][0]["message"], e
    assert api.get("/v1/users/u1").status_code == 404


def test_async_import_job_names_the_bad_row(api):
    r = api.post("/v1/segments/import?name=imp&format=plain&async=true", content=b"user_id,plan\nu1,a\nu2,\xff\n")
    assert r.status_code == 202, r.text
    job = r.json()
    for _ in range(100):
        job = api.get(f"/v1/import-jobs/{job['id']}").json()
        if job["status"] != "running":
            break
        time.sleep(0.05)
    assert job["status"] == "failed" and job["errors"][0]["row"] == 3 and "0xff" in job["errors"][0]["message"], job


def test_oversized_import_leaves_no_file(api, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    body = b"user_id\n" + b"u\n" * (6 * 1024 * 1024)  # 12 MB, past the 10 MB body limit
    for _ in range(2):
        assert api.post("/v1/segments/import?name=big&format=plain", content=body).status_code == 413
    assert list(spool.iterdir()) == []


# ---- 500s ---------------------------------------------------------------------------------------------

class _BrokenSink:
    """A third-party sink with a bug: building it raises something no handler of ours knows."""

    kind = "broken"
    config_fields = ()

    def __call__(self, name, config):
        raise RuntimeError("bug in a third-party sink")


class _BrokenPlugin:
    @hookimpl
    def register_event_sinks(self):
        return [_BrokenSink()]


def test_an_internal_error_is_logged_with_its_request_id(client, api, caplog):
    client.app.state.plugins = get_plugin_manager(extra_modules=[_BrokenPlugin()])
    with caplog.at_level(logging.ERROR, logger="tidings.api"):
        r = api.put("/v1/event-streams/s1", json={"kind": "broken"})
    e = _error(r, 500)
    assert e["code"] == "internal" and set(e) >= {"code", "message", "field", "request_id"}
    assert r.headers["x-request-id"] == e["request_id"] and e["request_id"] in e["message"]
    [record] = [rec for rec in caplog.records if rec.name == "tidings.api"]
    assert e["request_id"] in record.getMessage()
    assert record.exc_info and "bug in a third-party sink" in str(record.exc_info[1])
    assert "RuntimeError" in caplog.text  # the traceback is in the log


def test_every_answer_carries_a_request_id(client, api):
    ok, missing, unrouted = api.get("/v1/events"), api.get("/v1/users/nobody"), client.get("/nowhere")
    ids = {r.headers["x-request-id"] for r in (ok, missing, unrouted)}
    assert len(ids) == 3
    assert api.get("/v1/events", headers={"X-Request-Id": "from-my-proxy-1"}).headers["x-request-id"] == "from-my-proxy-1"


@pytest.mark.parametrize("path, field", [
    ("/v1/users/a%00b", "path"),
    ("/v1/journeys/%00", "path"),
    ("/v1/events?name=%00", "name"),
    ("/feedback/%00/smtp", "path"),
])
def test_nul_in_a_path_or_query(api, path, field):
    e = _error(api.get(path) if "feedback" not in path else api.post(path, content=b"{}"))
    assert e["field"] == field and "NUL" in e["message"], e


@pytest.mark.parametrize("text, words", [
    ("a: !!timestamp 99999-01-01\n", "cannot read value"),
    ("a: " + "9" * 5000 + "\n", "cannot read value"),
    ("a: 1\x00\n", "unacceptable character"),
])
def test_yaml_values_the_constructors_refuse(api, text, words):
    r = api.post("/v1/journeys/validate", content=text.encode())
    assert r.status_code == 200, r.text
    assert any(words in e["message"] for e in r.json()["errors"]), r.json()


def test_the_cli_refuses_billion_laughs_at_its_line(tmp_path):
    """The CLI reads segments, templates and journeys through the same loader as the API."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "laughs.yaml").write_text("apiVersion: tidings/v1\nkind: Segment\nid: s\n" + LAUGHS)
    tidings = str(Path(sys.executable).with_name("tidings"))
    t = time.monotonic()
    out = subprocess.run([tidings, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 30
    assert out.returncode == 1
    assert any(line.startswith(f"{tmp_path / 'laughs.yaml'}:") and "aliases expand" in line
               for line in out.stderr.splitlines()), out.stderr


@pytest.mark.parametrize("part, source", [
    ("text", '{{ "x" * 50000000 }}'),
    ("html", '{% set a = "xxxxxxxxxx" %}' + "{% set a = a ~ a %}" * 30 + "{{ a }}"),
    ("subject", '{{ "%999999999d" % 1 }}'),
    ("text", '{{ "x"|center(999999999) }}'),
])
def test_a_template_too_big_for_anyone_is_refused_at_save(api, part, source):
    body = {"channel": "EMAIL", "subject": "s", "text": "t", part: source}
    e = _error(api.put("/v1/templates/big", json=body))
    assert e["field"] == part, e
    assert any(w in e["message"] for w in ("more than 1,000,000 characters", "too large", "larger than 1,000,000")), e
    assert api.get("/v1/templates/big").status_code == 404


def test_a_template_too_big_for_one_recipient_fails_only_that_message(api):
    body = {"channel": "EMAIL", "subject": "s", "text": "{{ data.word * data.times }}"}
    assert api.put("/v1/templates/rep", json=body).status_code == 200
    r = api.post("/v1/messages/batch", json={"messages": [
        {"channel": "EMAIL", "template_id": "rep", "data": {"word": "ab", "times": 3},
         "recipients": [{"address": "small@example.com"}]},
        {"channel": "EMAIL", "template_id": "rep", "data": {"word": "ab", "times": 10**8},
         "recipients": [{"address": "huge@example.com"}]}]})
    assert r.status_code == 200, r.text
    small, huge = (m["results"][0] for m in r.json()["messages"])
    assert small["status"] == "sent" and huge["status"] == "render_failed", (small, huge)
    assert "more than 1,000,000 characters" in huge["error"]
