"""The destination guard (tidings.engine.platform.egress): what a workspace's settings can make the server connect to.

Every provider here points at a real server on loopback. The suite's conftest allows loopback the way an
operator would; these tests take that setting away (the default install) or narrow it, and check that
nothing reaches the server, whatever the workspace's own settings say.
"""
from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from tidings.engine.platform import egress
from tidings.engine.channels.contract import (
    ChannelConfigError, ChannelType, OutgoingMessage, RetryPolicy, send_with_retry,
)
from tidings.engine.platform.config import Settings
from tidings.plugins.apns import ApnsChannel
from tidings.plugins.email_smtp import SmtpChannel
from tidings.plugins.fcm import FcmChannel
from tidings.plugins.twilio import TwilioSmsChannel
from tidings.plugins.webhook import WebhookChannel

from .test_apns import apns, config as apns_config, push as apns_push  # noqa: F401  (fixture)
from .test_smtp import Recorder, base_config, msg, smtp_server  # noqa: F401  (fixture)

VAR = egress.ENV_VAR


@pytest.fixture
def default_install(monkeypatch):
    """No private destination allowed (the suite's conftest allows loopback; an install does not)."""
    monkeypatch.delenv(VAR, raising=False)
    for name in ("TIDINGS_SMTP_HOST", "TIDINGS_SMTP_PORT", "TIDINGS_SMTP_SECURITY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::a9fe:a9fe",  # IPv4-compatible
    "::ffff:0:7f00:1",  # SIIT
    "2002:a9fe:a9fe::", "2002:7f00:1::1", "2002:0a00:0001::",  # 6to4 of metadata, loopback, 10/8
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::c0a8:101",  # NAT64 of metadata, loopback, 192.168/16
    "64:ff9b:1::1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
])
def test_private_addresses_in_every_spelling_are_not_public(address):
    assert not egress.is_public(ipaddress.ip_address(address))


_PRIVATE_V4 = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                   "169.254.0.0/16", "100.64.0.0/10", "0.0.0.0/8")]


@given(hs.sampled_from(_PRIVATE_V4).flatmap(
    lambda net: hs.integers(int(net.network_address), int(net.broadcast_address))))
def test_no_ipv6_spelling_of_a_private_ipv4_address_is_public(v4):
    """Every transition form that routes to (or through) an IPv4 address carries it somewhere: none passes."""
    spellings = [
        (0xFFFF << 32) | v4,  # ::ffff:a.b.c.d
        v4,  # ::a.b.c.d
        (0xFFFF << 48) | v4,  # ::ffff:0:a.b.c.d
        (0x2002 << 112) | (v4 << 80),  # 6to4
        (0x0064FF9B << 96) | v4,  # NAT64
        (0x20010000 << 96) | (v4 ^ 0xFFFFFFFF),  # Teredo (client address obfuscated)
    ]
    for value in spellings:
        assert not egress.is_public(ipaddress.IPv6Address(value)), ipaddress.IPv6Address(value)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "2002:0808:0808::", "64:ff9b::808:808",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_are_public(address):
    assert egress.is_public(ipaddress.ip_address(address))


def test_the_operator_allow_list():
    p = egress.parse_policy("10.0.0.0/8, 127.0.0.1:2525, smtp.internal:587 [::1]:8080")
    lo, ten = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.2.3.4")
    assert p.permits("10.2.3.4", ten, 1) and p.permits("x", ipaddress.ip_address("::ffff:10.0.0.1"), 1)
    assert p.permits("127.0.0.1", lo, 2525) and not p.permits("127.0.0.1", lo, 2526)
    assert p.permits("smtp.internal", ipaddress.ip_address("192.168.0.5"), 587)
    assert not p.permits("other.internal", ipaddress.ip_address("192.168.0.5"), 587)
    assert p.permits("::1", ipaddress.ip_address("::1"), 8080) and not p.permits("::1", ipaddress.ip_address("::1"), 80)
    assert not egress.parse_policy("").permits("localhost", lo, 80)
    assert egress.parse_policy("all").permits("localhost", lo, 80)
    with pytest.raises(ValueError, match="'smtp.internal'"):
        egress.parse_policy("10.0.0.0/8,smtp.internal")
    with pytest.raises(ValueError, match=VAR):
        Settings.from_env(**{VAR: "127.0.0.1:notaport"})


async def test_names_are_resolved_and_checked_at_connect_time(http_server, default_install):
    """`localhost` is not an address: only resolving it, when connecting, shows it is loopback."""
    server = http_server(lambda req: (200, {"ok": True}))
    async with egress.async_client() as client:
        for url in (server.url, server.url.replace("127.0.0.1", "localhost")):
            with pytest.raises(egress.DestinationRefused, match=VAR):
                await client.post(url, json={})
    assert server.requests == []


async def test_an_allowed_host_port_opens_that_port_only(http_server, monkeypatch):
    allowed = http_server(lambda req: (200, {"ok": True}))
    other = http_server(lambda req: (200, {"ok": True}))
    monkeypatch.setenv(VAR, allowed.url.removeprefix("http://"))
    async with egress.async_client() as client:
        assert (await client.post(allowed.url, json={})).status_code == 200
        with pytest.raises(egress.DestinationRefused):
            await client.post(other.url, json={})
    assert len(allowed.requests) == 1 and other.requests == []


@pytest.mark.parametrize("target", ["internal", "http://169.254.169.254/latest/meta-data/",
                                    "http://[2002:a9fe:a9fe::]/", "http://localhost:{port}/"])
async def test_redirects_to_private_addresses_are_refused(http_server, monkeypatch, target):
    """An allowed receiver answering 307 to an address it may not send us to: the redirect is checked like
    the first request, and the internal server gets nothing."""
    internal = http_server(lambda req: (200, {"secret": "metadata"}))
    port = internal.url.rsplit(":", 1)[1]
    location = internal.url + "/" if target == "internal" else target.format(port=port)

    front = http_server(lambda req: (307, "", {"Location": location}))
    monkeypatch.setenv(VAR, front.url.removeprefix("http://"))
    async with egress.async_client(follow_redirects=True) as client:
        with pytest.raises(egress.DestinationRefused):
            await client.post(front.url, json={})
    assert len(front.requests) == 1 and internal.requests == []


async def test_a_webhook_channel_does_not_follow_redirects(http_server):
    internal = http_server(lambda req: (200, {}))
    front = http_server(lambda req: (302, "", {"Location": internal.url}))
    [r] = await WebhookChannel().send_batch([OutgoingMessage(
        message_id="w", to=front.url, channel_type=ChannelType.WEBHOOK, payload={})], {})
    assert r.status == "failed" and r.permanent and r.error == "HTTP 302"
    assert internal.requests == []


def _sms() -> OutgoingMessage:
    return OutgoingMessage(message_id="s1", to="+15551234567", channel_type=ChannelType.SMS, body="hi")


async def _permanent_failures(channel, messages, cfg) -> list:
    """Results as the engine's dispatcher records them."""
    return await send_with_retry(channel, messages, cfg, RetryPolicy(max_attempts=2, base_delay=0))


async def test_twilio_base_url_cannot_be_aimed_at_loopback(http_server, default_install):
    server = http_server(lambda req: (201, {"sid": "SM1"}))
    cfg = {"base_url": server.url, "account_sid": "AC1", "auth_token": "t", "from_number": "+15550000000"}
    with pytest.raises(ChannelConfigError, match="base_url"):
        await TwilioSmsChannel().send_batch([_sms()], cfg)
    [r] = await _permanent_failures(TwilioSmsChannel(), [_sms()], cfg)
    assert r.status == "failed" and r.permanent and VAR in r.error
    assert server.requests == []


async def test_fcm_base_url_and_token_uri_cannot_be_aimed_at_loopback(http_server, default_install):
    server = http_server(lambda req: (200, {"name": "projects/p/messages/1", "access_token": "x"}))
    push = OutgoingMessage(message_id="p1", to="tok", channel_type=ChannelType.PUSH, title="t")
    with pytest.raises(ChannelConfigError, match="base_url"):
        await FcmChannel().send_batch([push], {"base_url": server.url, "project_id": "p", "access_token": "a"})
    # a public base URL with the token request aimed at the metadata service
    sa = {"client_email": "x@p.iam.gserviceaccount.com", "private_key": "unused",
          "token_uri": "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"}
    with pytest.raises(ChannelConfigError, match="token_uri"):
        await FcmChannel().send_batch([push], {"base_url": "https://8.8.8.8", "project_id": "p",
                                               "service_account_json": json.dumps(sa)})
    assert server.requests == []


async def test_apns_base_url_cannot_be_aimed_at_loopback(apns, default_install):  # noqa: F811
    with pytest.raises(ChannelConfigError, match="base_url"):
        await ApnsChannel().send_batch([apns_push("ab" * 32)], apns_config(apns))
    assert apns.requests == []


async def test_smtp_host_cannot_be_aimed_at_loopback(smtp_server, default_install):  # noqa: F811
    rec = Recorder()
    server = smtp_server(rec)
    for host in ("127.0.0.1", "localhost"):
        cfg = {**base_config(server.port), "host": host}
        with pytest.raises(ChannelConfigError, match=VAR):
            await SmtpChannel().send_batch([msg(1)], cfg)
        [r] = await _permanent_failures(SmtpChannel(), [msg(1)], cfg)
        assert r.status == "failed" and r.permanent and VAR in r.error
    assert rec.messages == []


async def test_the_operators_own_smtp_relay_is_allowed(smtp_server, default_install, monkeypatch):  # noqa: F811
    """TIDINGS_SMTP_HOST/PORT (the relay the operator gives every workspace, what `tidings dev` sets) needs no
    second setting; another port of the same host stays closed."""
    rec = Recorder()
    server = smtp_server(rec)
    monkeypatch.setenv("TIDINGS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(server.port))
    [r] = await SmtpChannel().send_batch([msg(1)], base_config(server.port))
    assert r.status == "sent" and len(rec.messages) == 1
    with pytest.raises(ChannelConfigError, match=VAR):
        await SmtpChannel().send_batch([msg(2)], base_config(server.port + 1))


def _narrowing_server(http_server, monkeypatch, answer):
    """A provider on loopback that, answering its first request, closes the connection and has the operator's
    allow-list narrowed: the next request's new connection is refused by the guard at connect time (as a
    name resolving elsewhere by then would be), after the check made before the batch had passed."""
    def responder(req):
        monkeypatch.setenv(VAR, "10.0.0.0/8")
        return (*answer, {"Connection": "close"})
    return http_server(responder)


async def test_twilio_a_destination_refused_at_connect_time_fails_that_message_permanently(http_server, monkeypatch):
    server = _narrowing_server(http_server, monkeypatch, (201, {"sid": "SM1"}))
    cfg = {"base_url": server.url, "account_sid": "AC1", "auth_token": "t", "from_number": "+15550000000",
           "concurrency": 1}
    messages = [OutgoingMessage(message_id=f"s{i}", to="+15551234567", channel_type=ChannelType.SMS, body="hi")
                for i in range(2)]
    first, second = await _permanent_failures(TwilioSmsChannel(), messages, cfg)
    assert first.ok and first.attempts == 1  # not sent again with the batch
    assert second.status == "failed" and second.permanent and VAR in second.error
    assert len(server.requests) == 1


async def test_fcm_a_destination_refused_at_connect_time_fails_that_push_permanently(http_server, monkeypatch):
    server = _narrowing_server(http_server, monkeypatch, (200, {"name": "projects/p/messages/1"}))
    cfg = {"base_url": server.url, "project_id": "p", "access_token": "a", "concurrency": 1}
    pushes = [OutgoingMessage(message_id=f"p{i}", to="tok", channel_type=ChannelType.PUSH, title="t")
              for i in range(2)]
    first, second = await _permanent_failures(FcmChannel(), pushes, cfg)
    assert first.ok and first.attempts == 1
    assert second.status == "failed" and second.permanent and VAR in second.error
    assert len(server.requests) == 1
