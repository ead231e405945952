"""PutEventStream / GetEventStream / DeleteEventStream through boto3: the DestinationStreamArn names a native
event stream (here a webhook to a real receiver on loopback), and a send made through Pinpoint reaches it as
Pinpoint-shaped records."""
from __future__ import annotations

import pytest

from tests.eventually import eventually
from tests.loopback import HttpServer
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import client_for, make_key

ROLE = "arn:aws:iam::123456789012:role/pinpoint-events"


@pytest.fixture
def receiver():
    server = HttpServer(lambda _req: (200, {})).start()
    yield server
    server.stop()


@pytest.fixture
def mail_api(smtp_sink, running_api):  # noqa: F811  (the sink's settings must exist before the API starts)
    return running_api


def _records(receiver):
    return [r for req in receiver.requests for r in req.json()["records"]]


def test_a_send_reaches_the_named_stream_in_pinpoints_shape(smtp_sink, mail_api, pinpoint, native,  # noqa: F811
                                                            receiver):
    made = native.put("/v1/event-streams/pinpoint-events", json={
        "kind": "webhook", "config": {"url": receiver.url + "/hook", "secret": "whsec"}, "start": "now"})
    assert made.status_code == 201, made.text
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/pinpoint-events"
    put = pinpoint.put_event_stream(ApplicationId="acme", WriteEventStream={
        "DestinationStreamArn": arn, "RoleArn": ROLE})["EventStream"]
    assert (put["ApplicationId"], put["DestinationStreamArn"], put["RoleArn"]) == ("acme", arn, ROLE)
    got = pinpoint.get_event_stream(ApplicationId="acme")["EventStream"]
    assert got["DestinationStreamArn"] == arn and got["LastModifiedDate"]
    assert native.get("/v1/event-streams/pinpoint-events").json()["format"] == "pinpoint"

    pinpoint.update_endpoint(ApplicationId="acme", EndpointId="ann-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "ann@example.com", "User": {"UserId": "ann"}})
    sent = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Endpoints": {"ann-mail": {}},
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {"Subject": {"Data": "Hi"},
                                                                  "TextPart": {"Data": "Hello"}}}}})
    message_id = sent["MessageResponse"]["EndpointResult"]["ann-mail"]["MessageId"]
    records = eventually(lambda: [r for r in _records(receiver) if r.get("event_type") == "_email.send"],
                         what="an _email.send record at the receiver")
    [send] = records
    assert send["application"]["app_id"] == "acme" and send["client"]["client_id"] == "ann-mail"
    assert send["event_version"] == "3.1" and isinstance(send["event_timestamp"], int)
    assert send["attributes"]["feedback"] == "received" and send["attributes"]["message_type"] == "Transactional"
    mail = send["facets"]["email_channel"]["mail_event"]["mail"]
    assert mail["destination"] == ["ann@example.com"] and message_id in mail["message_id"]
    assert send["attributes"]["message_id"] == message_id
    assert all("event_type" in r for r in _records(receiver))  # every record in Pinpoint's shape

    deleted = pinpoint.delete_event_stream(ApplicationId="acme")["EventStream"]
    assert deleted["DestinationStreamArn"] == arn
    assert native.get("/v1/event-streams/pinpoint-events").json()["enabled"] is False
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_event_stream(ApplicationId="acme")


def test_a_firehose_arn_and_replacing_the_destination(pinpoint, native, receiver):
    for name in ("first", "second"):
        native.put(f"/v1/event-streams/{name}", json={"kind": "webhook",
                                                       "config": {"url": receiver.url, "secret": "s"}})
    pinpoint.put_event_stream(ApplicationId="acme", WriteEventStream={
        "DestinationStreamArn": "arn:aws:firehose:eu-west-1:1:deliverystream/first", "RoleArn": ROLE})
    pinpoint.put_event_stream(ApplicationId="acme", WriteEventStream={
        "DestinationStreamArn": "arn:aws:kinesis:eu-west-1:1:stream/second", "RoleArn": ROLE})
    assert pinpoint.get_event_stream(ApplicationId="acme")["EventStream"]["DestinationStreamArn"].endswith("/second")
    assert native.get("/v1/event-streams/first").json()["enabled"] is False  # one destination per application
    assert native.get("/v1/event-streams/second").json()["enabled"] is True
    # Deleting the native stream ends the application's event stream too.
    assert native.delete("/v1/event-streams/second").status_code in (200, 204)
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_event_stream(ApplicationId="acme")


def test_errors(running_api, pinpoint, native):
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_event_stream(ApplicationId="acme")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.delete_event_stream(ApplicationId="acme")
    for arn, words in (("arn:aws:kinesis:us-east-1:1:stream/missing", "PUT /v1/event-streams/missing"),
                       ("arn:aws:s3:::bucket", "DestinationStreamArn"),
                       ("not an arn", "DestinationStreamArn")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.put_event_stream(ApplicationId="acme", WriteEventStream={"DestinationStreamArn": arn,
                                                                              "RoleArn": ROLE})
        assert words in caught.value.response["Error"]["Message"]
    native.put("/v1/event-streams/mine", json={"kind": "webhook", "config": {"url": "http://127.0.0.1:9/", "secret": "s"}})
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    with pytest.raises(other.exceptions.BadRequestException):  # globex has no stream of that name
        other.put_event_stream(ApplicationId="globex", WriteEventStream={
            "DestinationStreamArn": "arn:aws:kinesis:us-east-1:1:stream/mine", "RoleArn": ROLE})
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_event_stream(ApplicationId="acme")
