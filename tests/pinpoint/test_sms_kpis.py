"""Pinpoint's transactional SMS KPIs grouped by country and the error distribution, through boto3: SendMessages
sends real SMS through the twilio-sms channel to a Twilio-shaped server on loopback, which refuses one number with
Twilio's error 21211; this test then plays Twilio's status callbacks (signed, to the real /feedback route) for
the accepted ones. The KPIs are what one counts by hand from that."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from botocore.exceptions import ClientError

from tidings.engine.platform.config import Settings
from tidings.plugins.twilio import twilio_signature
from tests.pinpoint.test_kpis import values

SID, TOKEN = "AC0123456789", "tw-kpi-token-0123456789"
REFUSED = "+4915112345678"  # Twilio answers 400 with its error 21211 (not a valid 'To' number)
# endpoint -> (phone number, Location.Country or None, what Twilio later reports: None for no callback)
RECIPIENTS = {
    "ann": ("+14155550101", None, ("delivered", None)),  # US by its number
    "bea": ("+33612345678", "fr", ("delivered", None)),  # FR by its Location (lower case as sent)
    "cal": ("+16475550123", "MX", ("undelivered", "30003")),  # a Canadian number, but the endpoint says MX
    "dee": (REFUSED, None, None),  # refused at the send: failed, 21211
    "eve": ("+4915112345679", None, ("failed", "30003")),  # DE by its number
    "fay": ("+15551230000", None, None),  # a 555 number belongs to no country: ZZ; sent, never reported
}


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings.from_env(TIDINGS_HOME=str(tmp_path / "home"), TIDINGS_DATABASE_URL=database_url)


def twilio(req):
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    if form["To"] == REFUSED:
        return 400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}
    return 201, {"sid": "SM" + form["To"][1:].rjust(32, "0"), "status": "queued", "price": None, "price_unit": "USD"}


def _callback(url: str, form: dict[str, str]) -> None:
    """Twilio's status callback: a signed form POST to the StatusCallback URL it was given."""
    r = httpx.post(url, content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": twilio_signature(TOKEN, url, form)})
    assert r.status_code == 200 and r.json()["recorded"] == 1, r.text


def test_sms_kpis_by_country_and_by_error_code(running_api, pinpoint, native, http_server):
    server = http_server(twilio)
    callback = running_api.url + "/feedback/acme/twilio-sms"
    r = native.put("/v1/channels/twilio-sms", json={"config": {
        "base_url": server.url, "account_sid": SID, "auth_token": TOKEN, "from_number": "+15550001111",
        "status_callback_url": callback}})
    assert r.status_code == 200, r.text
    for user, (phone, country, _) in RECIPIENTS.items():
        request = {"ChannelType": "SMS", "Address": phone, "User": {"UserId": user}}
        if country:
            request["Location"] = {"Country": country}
        pinpoint.update_endpoint(ApplicationId="acme", EndpointId=f"{user}-sms", EndpointRequest=request)
    before = datetime.now(UTC) - timedelta(seconds=1)
    sent = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Endpoints": {f"{u}-sms": {} for u in RECIPIENTS}, "MessageConfiguration": {"SMSMessage": {"Body": "Hi"}}})
    statuses = {e: r["DeliveryStatus"] for e, r in sent["MessageResponse"]["EndpointResult"].items()}
    assert statuses == {**{f"{u}-sms": "SUCCESSFUL" for u in RECIPIENTS}, "dee-sms": "PERMANENT_FAILURE"}
    asked = {parse_qs(r.body.decode())["To"][0]: parse_qs(r.body.decode()) for r in server.requests}
    assert sorted(asked) == sorted(phone for phone, _, _ in RECIPIENTS.values())
    for phone, _, report in RECIPIENTS.values():
        if report is not None:
            status, code = report
            form = {"MessageSid": "SM" + phone[1:].rjust(32, "0"), "MessageStatus": status, "To": phone,
                    "AccountSid": SID, **({"ErrorCode": code} if code else {})}
            _callback(asked[phone]["StatusCallback"][0], form)
    after = datetime.now(UTC) + timedelta(seconds=1)

    def kpi(name: str) -> list[tuple]:
        return values(pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName=name, StartTime=before,
                                                               EndTime=after))

    # by hand: Twilio took 5 (all but dee), of which ann's and bea's were delivered, cal's and eve's failed (30003)
    # and fay's was never reported; dee's failed at the send (21211)
    assert kpi("txn-sms-sent") == [((), {"TxnSmsSent": 5.0})]
    assert kpi("txn-sms-sent-grouped-by-country") == [
        (("DE",), {"TxnSmsSent": 1.0}), (("FR",), {"TxnSmsSent": 1.0}), (("MX",), {"TxnSmsSent": 1.0}),
        (("US",), {"TxnSmsSent": 1.0}), (("ZZ",), {"TxnSmsSent": 1.0})]
    assert kpi("txn-sms-delivered-grouped-by-country") == [  # a country with SMS but no delivery answers 0
        (("DE",), {"TxnSmsDelivered": 0.0}), (("FR",), {"TxnSmsDelivered": 1.0}), (("MX",), {"TxnSmsDelivered": 0.0}),
        (("US",), {"TxnSmsDelivered": 1.0}), (("ZZ",), {"TxnSmsDelivered": 0.0})]
    assert kpi("txn-sms-delivery-rate-grouped-by-country") == [
        (("DE",), {"TxnSmsDeliveryRate": 0.0}), (("FR",), {"TxnSmsDeliveryRate": 1.0}),
        (("MX",), {"TxnSmsDeliveryRate": 0.0}), (("US",), {"TxnSmsDeliveryRate": 1.0}),
        (("ZZ",), {"TxnSmsDeliveryRate": 0.0})]
    assert kpi("txn-sms-error-distribution") == [
        (("21211",), {"TxnSmsErrorDistribution": 1.0}), (("30003",), {"TxnSmsErrorDistribution": 2.0})]
    answer = pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName="txn-sms-error-distribution",
                                                     StartTime=before, EndTime=after)
    assert answer["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"][0]["GroupedBys"] == [
        {"Key": "ErrorCode", "Type": "String", "Value": "21211"}]
    assert pinpoint.get_application_date_range_kpi(
        ApplicationId="acme", KpiName="txn-sms-sent-grouped-by-country", StartTime=before, EndTime=after,
    )["ApplicationDateRangeKpiResponse"]["KpiResult"]["Rows"][0]["GroupedBys"] == [
        {"Key": "Country", "Type": "String", "Value": "DE"}]


@pytest.mark.parametrize("name, words", [
    ("txn-sms-total-price-grouped-by-country", "records no SMS prices"),
    ("txn-sms-average-price-grouped-by-country", "status callbacks carry no price"),
    ("txn-emails-sent-grouped-by-country", "not a metric Tidings computes"),  # country is the SMS metrics'
    ("txn-sms-error-distribution-grouped-by-date", "not a metric Tidings computes"),
])
def test_what_the_sms_kpis_cannot_answer_is_refused_by_name(running_api, pinpoint, name, words):
    with pytest.raises(ClientError) as caught:
        pinpoint.get_application_date_range_kpi(ApplicationId="acme", KpiName=name)
    error = caught.value.response["Error"]
    assert error["Code"] == "BadRequestException" and "KpiName" in error["Message"] and words in error["Message"]
