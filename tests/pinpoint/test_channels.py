"""Channels through boto3: a channel configured with Update*Channel is the workspace's native channel (read
back by GET /v1/channels, used by sends), one configured natively reads back through Pinpoint, secrets are
sealed at rest and never answered (HasCredential / HasTokenKey instead), and what Tidings cannot apply is
refused naming the member."""
from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import client_for, make_key
from tidings.engine.channels.secrets import keyring
from tidings.engine.channels.tables import channel_configs
from tidings.engine.platform.db import make_engine

P8 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
P8_BODY = P8.splitlines()[1]  # a line of the key's base64: must appear in no answer and in no stored row
APNS = {"BundleId": "com.acme.app", "TeamId": "TEAM123456", "TokenKeyId": "KEY7654321", "TokenKey": P8,
        "DefaultAuthenticationMethod": "KEY"}
SERVICE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
SERVICE_JSON = json.dumps({"type": "service_account", "project_id": "acme-app", "private_key_id": "k1",
                           "client_email": "push@acme-app.iam.gserviceaccount.com", "private_key": SERVICE_KEY,
                           "token_uri": "https://oauth2.googleapis.com/token"})
SERVICE_KEY_BODY = SERVICE_KEY.splitlines()[1]
TWILIO = {"account_sid": "AC0123456789abcdef", "auth_token": "twilio-secret-token-42", "from_number": "+15550001111"}


@pytest.fixture
def mail_api(smtp_sink, running_api):  # noqa: F811  (the sink's settings must exist before the API starts)
    return running_api


def _message(caught) -> str:
    return caught.value.response["Error"]["Message"]


def _stored(running_api, name: str) -> dict:
    db = make_engine(running_api.database_url)
    try:
        with db.connect() as conn:
            return conn.execute(select(channel_configs.c.config).where(channel_configs.c.name == name)).scalar_one()
    finally:
        db.dispose()


def _native(native, name: str) -> dict | None:
    answer = native.get("/v1/channels")
    assert answer.status_code == 200, answer.text
    return next((c for c in answer.json()["items"] if c["name"] == name), None)


VARIANTS = [  # (operation infix, request/response member infix, Platform, native environment, voip)
    ("apns_channel", "APNSChannel", "APNS", "production", False),
    ("apns_sandbox_channel", "APNSSandboxChannel", "APNS_SANDBOX", "sandbox", False),
    ("apns_voip_channel", "APNSVoipChannel", "APNS_VOIP", "production", True),
    ("apns_voip_sandbox_channel", "APNSVoipSandboxChannel", "APNS_VOIP_SANDBOX", "sandbox", True),
]


def test_each_apns_channel_is_the_native_apns_channel_with_its_key_sealed(running_api, pinpoint, native):
    for op, member, platform, environment, voip in VARIANTS:
        update, get, delete = (getattr(pinpoint, f"{verb}_{op}") for verb in ("update", "get", "delete"))
        answer = update(ApplicationId="acme", **{f"{member}Request": APNS})
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        got = get(ApplicationId="acme")
        for response in (answer[f"{member}Response"], got[f"{member}Response"]):
            assert response["Platform"] == platform and response["ApplicationId"] == "acme"
            assert response["HasTokenKey"] is True and response["HasCredential"] is True
            assert response["Enabled"] is True and response["DefaultAuthenticationMethod"] == "KEY"
            assert response["CreationDate"] and response["LastModifiedDate"]
        assert P8_BODY not in json.dumps(answer) + json.dumps(got)
        # The native channel: environment and push type of the variant, the key shown as "***".
        config = _native(native, "apns")["config"]
        assert config["environment"] == environment and config["private_key"] == "***"
        assert config["team_id"] == "TEAM123456" and config["key_id"] == "KEY7654321"
        assert config["topic"] == ("com.acme.app.voip" if voip else "com.acme.app")
        assert config.get("push_type") == ("voip" if voip else None)
        stored = _stored(running_api, "apns")["private_key"]
        assert stored.startswith("fernet:") and P8_BODY not in stored and keyring().open(stored) == P8
        assert set(pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]) == {platform}
        # One APNs channel per workspace: another variant is not found, and configuring one is refused by name.
        other_op, _, other_platform, _, _ = next(v for v in VARIANTS if v[2] != platform)
        with pytest.raises(pinpoint.exceptions.NotFoundException):
            getattr(pinpoint, f"get_{other_op}")(ApplicationId="acme")
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            getattr(pinpoint, f"update_{other_op}")(ApplicationId="acme", **{
                f"{next(v[1] for v in VARIANTS if v[0] == other_op)}Request": APNS})
        assert f"Delete{member.replace('APNS', 'Apns')}" in _message(caught)
        deleted = delete(ApplicationId="acme")[f"{member}Response"]
        assert deleted["Platform"] == platform
        with pytest.raises(pinpoint.exceptions.NotFoundException):
            get(ApplicationId="acme")
        assert _native(native, "apns") is None


def test_an_update_keeps_what_it_does_not_name_and_refuses_what_tidings_cannot_apply(running_api, pinpoint, native):
    pinpoint.update_apns_channel(ApplicationId="acme", APNSChannelRequest=APNS)
    # A later update naming only the bundle keeps the stored key (still sealed, still opening to the same key).
    pinpoint.update_apns_channel(ApplicationId="acme", APNSChannelRequest={"BundleId": "com.acme.other"})
    assert _native(native, "apns")["config"]["topic"] == "com.acme.other"
    assert keyring().open(_stored(running_api, "apns")["private_key"]) == P8
    for request, named in (({"Certificate": "-----BEGIN CERTIFICATE-----"}, "APNSChannelRequest.Certificate"),
                           ({"PrivateKey": "-----BEGIN PRIVATE KEY-----"}, "APNSChannelRequest.PrivateKey"),
                           ({"DefaultAuthenticationMethod": "CERTIFICATE"},
                            "APNSChannelRequest.DefaultAuthenticationMethod"),
                           ({"TokenKey": "not a key"}, "APNSChannelRequest.TokenKey"),
                           ({"Enabled": False}, "APNSChannelRequest.Enabled")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.update_apns_channel(ApplicationId="acme", APNSChannelRequest=request)
        assert named in _message(caught), _message(caught)
    assert keyring().open(_stored(running_api, "apns")["private_key"]) == P8  # nothing refused was stored
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:  # another variant while APNs is set
        pinpoint.update_apns_sandbox_channel(ApplicationId="acme", APNSSandboxChannelRequest={"BundleId": "x"})
    assert "DeleteApnsChannel" in _message(caught)
    # PUSH is served by one channel: FCM is refused while APNs serves it.
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_gcm_channel(ApplicationId="acme", GCMChannelRequest={"ServiceJson": SERVICE_JSON})
    assert "GCMChannelRequest" in _message(caught) and "DeleteApnsChannel" in _message(caught)
    pinpoint.delete_apns_channel(ApplicationId="acme")
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_apns_channel(ApplicationId="acme", APNSChannelRequest={"BundleId": "com.acme.app"})
    assert "TokenKey" in _message(caught) and "TeamId" in _message(caught)


def test_gcm_is_the_native_fcm_channel(running_api, pinpoint, native):
    for request, named in (({"ApiKey": "AAAA-legacy-server-key"}, "GCMChannelRequest.ApiKey"),
                           ({"DefaultAuthenticationMethod": "KEY", "ServiceJson": SERVICE_JSON},
                            "GCMChannelRequest.DefaultAuthenticationMethod"),
                           ({"ServiceJson": "{not json"}, "GCMChannelRequest.ServiceJson"),
                           ({"ServiceJson": json.dumps({"project_id": "p"})}, "GCMChannelRequest.ServiceJson"),
                           ({"Enabled": True}, "GCMChannelRequest.ServiceJson")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.update_gcm_channel(ApplicationId="acme", GCMChannelRequest=request)
        assert named in _message(caught), _message(caught)
    assert _native(native, "fcm") is None
    answer = pinpoint.update_gcm_channel(ApplicationId="acme", GCMChannelRequest={
        "ServiceJson": SERVICE_JSON, "DefaultAuthenticationMethod": "TOKEN", "Enabled": True})
    got = pinpoint.get_gcm_channel(ApplicationId="acme")
    for response in (answer["GCMChannelResponse"], got["GCMChannelResponse"]):
        assert response["Platform"] == "GCM" and response["HasCredential"] is True
        assert response["HasFcmServiceCredentials"] is True and "Credential" not in response
    assert SERVICE_KEY_BODY not in json.dumps(answer) + json.dumps(got)
    config = _native(native, "fcm")["config"]
    assert config == {"project_id": "acme-app", "service_account_json": "***"}
    stored = _stored(running_api, "fcm")["service_account_json"]
    assert stored.startswith("fernet:") and keyring().open(stored)["client_email"].startswith("push@")
    assert pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]["GCM"]["HasCredential"]
    pinpoint.delete_gcm_channel(ApplicationId="acme")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_gcm_channel(ApplicationId="acme")


def test_sms_and_voice_are_the_native_twilio_channels(running_api, pinpoint, native):
    # Pinpoint's requests carry no Twilio account: without a native channel the update says where to make it.
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_sms_channel(ApplicationId="acme", SMSChannelRequest={"SenderId": "ACME"})
    assert "SMSChannelRequest" in _message(caught) and "PUT /v1/channels/twilio-sms" in _message(caught)
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_sms_channel(ApplicationId="acme")
    for name in ("twilio-sms", "twilio-voice"):
        put = native.put(f"/v1/channels/{name}", json={"config": TWILIO, "rate_limit": 5})
        assert put.status_code == 200, put.text
    sms = pinpoint.get_sms_channel(ApplicationId="acme")["SMSChannelResponse"]
    assert sms["Platform"] == "SMS" and sms["HasCredential"] is True and sms["SenderId"] == "+15550001111"
    assert sms["TransactionalMessagesPerSecond"] == 5
    updated = pinpoint.update_sms_channel(ApplicationId="acme", SMSChannelRequest={"ShortCode": "12345"})
    assert updated["SMSChannelResponse"]["ShortCode"] == "12345"
    assert TWILIO["auth_token"] not in json.dumps(updated) + json.dumps(sms)
    native_sms = _native(native, "twilio-sms")
    assert native_sms["config"]["from_number"] == "12345" and native_sms["config"]["auth_token"] == "***"
    assert native_sms["rate_limit"] == 5  # an update keeps the native settings it does not name
    assert keyring().open(_stored(running_api, "twilio-sms")["auth_token"]) == TWILIO["auth_token"]
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.update_sms_channel(ApplicationId="acme", SMSChannelRequest={"ShortCode": "1", "SenderId": "X"})
    assert "SMSChannelRequest.ShortCode" in _message(caught)
    voice = pinpoint.update_voice_channel(ApplicationId="acme", VoiceChannelRequest={"Enabled": True})
    assert voice["VoiceChannelResponse"]["Platform"] == "VOICE" and voice["VoiceChannelResponse"]["HasCredential"]
    channels = pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]
    assert set(channels) == {"SMS", "VOICE"} and all(c["HasCredential"] for c in channels.values())
    pinpoint.delete_voice_channel(ApplicationId="acme")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_voice_channel(ApplicationId="acme")
    assert _native(native, "twilio-voice") is None and _native(native, "twilio-sms") is not None
    assert set(pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]) == {"SMS"}


EMAIL = {"FromAddress": "Shop <hello@shop.example>",
         "Identity": "arn:aws:ses:us-east-1:123456789012:identity/shop.example"}
SIMPLE = {"EmailMessage": {"SimpleEmail": {"Subject": {"Data": "Hi"}, "TextPart": {"Data": "Hello"}}}}


def _send(pinpoint, address: str) -> None:
    result = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Addresses": {address: {"ChannelType": "EMAIL"}}, "MessageConfiguration": SIMPLE})
    assert result["MessageResponse"]["Result"][address]["DeliveryStatus"] == "SUCCESSFUL"


def test_an_email_channel_configured_through_pinpoint_is_what_sends_use(smtp_sink, mail_api, pinpoint,  # noqa: F811
                                                                        native):
    with pytest.raises(pinpoint.exceptions.NotFoundException):  # the operator's relay is no channel of the app
        pinpoint.get_email_channel(ApplicationId="acme")
    for request, named in (({**EMAIL, "ConfigurationSet": "tracking"}, "EmailChannelRequest.ConfigurationSet"),
                           ({**EMAIL, "RoleArn": "arn:aws:iam::1:role/x"}, "EmailChannelRequest.RoleArn"),
                           ({**EMAIL, "Identity": "arn:aws:ses:us-east-1:1:identity/other.example"},
                            "EmailChannelRequest.Identity"),
                           ({**EMAIL, "FromAddress": "nobody"}, "EmailChannelRequest.FromAddress"),
                           ({**EMAIL, "Enabled": False}, "EmailChannelRequest.Enabled")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            pinpoint.update_email_channel(ApplicationId="acme", EmailChannelRequest=request)
        assert named in _message(caught), _message(caught)
    answer = pinpoint.update_email_channel(ApplicationId="acme", EmailChannelRequest=EMAIL)["EmailChannelResponse"]
    assert answer["Platform"] == "EMAIL" and answer["FromAddress"] == EMAIL["FromAddress"]
    assert answer["Identity"].endswith(":identity/shop.example") and answer["HasCredential"] is False
    assert answer["MessagesPerSecond"] == 1000  # the operator's relay's rate, kept with its host
    smtp = _native(native, "smtp")
    assert smtp["config"]["from_address"] == EMAIL["FromAddress"] and smtp["config"]["host"] == "127.0.0.1"
    assert pinpoint.get_email_channel(ApplicationId="acme")["EmailChannelResponse"]["FromAddress"] == \
        EMAIL["FromAddress"]
    _send(pinpoint, "ann@example.com")
    [mail] = smtp_sink.to("ann@example.com")
    assert mail["From"] == "Shop <hello@shop.example>"
    pinpoint.delete_email_channel(ApplicationId="acme")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_email_channel(ApplicationId="acme")
    _send(pinpoint, "bob@example.com")  # back to the operator's channel and its From address
    assert smtp_sink.to("bob@example.com")[0]["From"] == "Acme <news@acme.example>"


def test_a_native_smtp_channel_reads_back_and_keeps_its_password(running_api, pinpoint, native):
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:  # no relay at all: where to make one
        pinpoint.update_email_channel(ApplicationId="acme", EmailChannelRequest=EMAIL)
    assert "PUT /v1/channels/smtp" in _message(caught)
    put = native.put("/v1/channels/smtp", json={"config": {
        "host": "smtp.shop.example", "username": "shop", "password": "smtp-secret-pass",
        "from_address": "news@shop.example"}})
    assert put.status_code == 200, put.text
    got = pinpoint.get_email_channel(ApplicationId="acme")["EmailChannelResponse"]
    assert got["FromAddress"] == "news@shop.example" and got["HasCredential"] is True
    updated = pinpoint.update_email_channel(ApplicationId="acme", EmailChannelRequest={
        "FromAddress": "hello@shop.example", "Identity": "hello@shop.example"})
    assert "smtp-secret-pass" not in json.dumps(got) + json.dumps(updated)
    config = _native(native, "smtp")["config"]
    assert config == {"host": "smtp.shop.example", "username": "shop", "password": "***",
                      "from_address": "hello@shop.example"}
    stored = _stored(running_api, "smtp")["password"]
    assert stored.startswith("fernet:") and keyring().open(stored) == "smtp-secret-pass"
    assert set(pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]) == {"EMAIL"}


def test_another_workspaces_key_sees_none_of_them(running_api, pinpoint):
    pinpoint.update_apns_channel(ApplicationId="acme", APNSChannelRequest=APNS)
    globex = client_for(running_api, make_key(running_api.database_url, "globex"))
    for call in (lambda: globex.get_channels(ApplicationId="acme"),
                 lambda: globex.get_apns_channel(ApplicationId="acme"),
                 lambda: globex.delete_apns_channel(ApplicationId="acme"),
                 lambda: globex.update_apns_channel(ApplicationId="acme", APNSChannelRequest=APNS)):
        with pytest.raises(globex.exceptions.NotFoundException):
            call()
    assert globex.get_channels(ApplicationId="globex")["ChannelsResponse"]["Channels"] == {}
    with pytest.raises(globex.exceptions.NotFoundException):
        globex.get_apns_channel(ApplicationId="globex")
    assert set(pinpoint.get_channels(ApplicationId="acme")["ChannelsResponse"]["Channels"]) == {"APNS"}
