"""The destination guard: where a workspace may make this server connect.

A workspace aims outbound connections: webhook endpoint URLs, event-stream sink URLs, provider base URLs
(Twilio, FCM and its token URI, APNs) and the SMTP host. Left unguarded, any of them turns the server into a
proxy into its own network (loopback admin ports, the cloud metadata service at 169.254.169.254, databases).
Every such connection goes through this module:

* the host is resolved when the connection is made (not only when the setting was saved, so a DNS name that
  later resolves to a private address is caught), *every* address it resolves to is checked, and the socket
  is connected to one of the checked addresses (never resolved again by someone else), with the host name
  kept for TLS (SNI and certificate checks);
* an address is public when it is globally routable and not multicast; IPv6 forms that embed an IPv4 address
  (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, SIIT ``::ffff:0:a.b.c.d``, 6to4
  ``2002:AABB:CCDD::``, Teredo ``2001:0::/32``, NAT64 ``64:ff9b::/96``) are judged by the IPv4 address they
  carry; local-use NAT64 ``64:ff9b:1::/48`` is never public;
* HTTP clients made by :func:`async_client` check at connect time, so a redirect (when a client follows
  them) is checked like the first request.

Private destinations are the operator's decision, never a workspace's: the environment variable
``TIDINGS_ALLOW_PRIVATE_DESTINATIONS`` is a comma-separated list of

* ``all``: every destination is allowed (a single-tenant install whose SMTP relay sits on the LAN);
* a network or address, ``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``: these addresses, on any port;
* ``host:port``, ``smtp.internal:587``, ``127.0.0.1:2525``, ``[::1]:8080``: that host name (exactly as a
  setting spells it) or address, on that port only.

The SMTP relay the operator configured for every workspace (``TIDINGS_SMTP_HOST`` and ``TIDINGS_SMTP_PORT``,
as ``tidings dev`` sets for its mail sink) and the S3-compatible store of Pinpoint import and export jobs
(``TIDINGS_S3_ENDPOINT_URL``, its host and port exactly) are allowed as well: the operator named them. Otherwise, with the
variable unset or empty, only public addresses are reached. A bad entry fails start-up
(``Settings.from_env`` parses it). The variables are read again when they change, so tests and
long-running processes see the current value.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

log = logging.getLogger(__name__)

ENV_VAR = "TIDINGS_ALLOW_PRIVATE_DESTINATIONS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")


DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults


class DestinationRefused(Exception):
    """The destination is not public and the operator has not allowed it (a permanent failure)."""


# ---- which addresses are public ------------------------------------------------------------------------------


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries (and that the packet may end up at), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client: where a Teredo relay delivers
    if ip in _NAT64 or ip in _SIIT or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True for a globally routable unicast address (IPv6 transition forms judged by what they embed)."""
    if ip.is_multicast or not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:  # where the IPv4 address sits depends on the operator's prefix length
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
    return True


def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # a zone id (fe80::1%eth0) names a local link


# ---- the operator's allow-list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    allow_all: bool = False
    networks: tuple[IPNetwork, ...] = ()
    endpoints: frozenset[tuple[str, int]] = frozenset()  # (host or address, port)

    def permits(self, host: str, ip: IPAddress, port: int) -> bool:
        if is_public(ip) or self.allow_all:
            return True
        if (host.lower(), port) in self.endpoints or (str(ip), port) in self.endpoints:
            return True
        inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in net or (inner is not None and inner in net) for net in self.networks)


def parse_policy(value: str | None) -> Policy:
    """The allow-list in ``TIDINGS_ALLOW_PRIVATE_DESTINATIONS``; ValueError naming a bad entry."""
    networks: list[IPNetwork] = []
    endpoints: set[tuple[str, int]] = set()
    for raw in (value or "").replace(" ", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.lower() in ("all", "*", "true", "1", "yes"):
            return Policy(allow_all=True)
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        host, sep, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]").lower()
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{ENV_VAR}: {entry!r} is neither a network (10.0.0.0/8), an address, "
                             f"'all', nor host:port (smtp.internal:587)")
        try:
            host = str(ipaddress.ip_address(host))  # one spelling per address
        except ValueError:
            pass
        endpoints.add((host, int(port)))
    return Policy(networks=tuple(networks), endpoints=frozenset(endpoints))


_SMTP_VARS = ("TIDINGS_SMTP_HOST", "TIDINGS_SMTP_PORT", "TIDINGS_SMTP_SECURITY")
_SMTP_DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


def operator_relay(host: str | None, port: str | None, security: str | None) -> tuple[str, int] | None:
    """The environment's SMTP relay as (host, port), the way tidings.engine.channels.config.env_defaults builds it."""
    if not host:
        return None
    try:
        number = int(port) if port else _SMTP_DEFAULT_PORTS.get(security or "starttls", 587)
    except ValueError:
        return None
    try:
        host = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        host = host.lower()
    return host, number


S3_VAR = "TIDINGS_S3_ENDPOINT_URL"


def operator_s3(url: str | None) -> tuple[str, int] | None:
    """The S3-compatible store the operator configured (TIDINGS_S3_ENDPOINT_URL) as (host, port)."""
    if not url:
        return None
    try:
        host, port = url_parts(url)
    except DestinationRefused:
        return None
    try:
        return str(ipaddress.ip_address(host.strip("[]"))), port
    except ValueError:
        return host.lower(), port


_cached: tuple[tuple[str | None, ...], Policy] = ((), Policy())


def current_policy() -> Policy:
    global _cached
    values = (os.environ.get(ENV_VAR), os.environ.get(S3_VAR), *(os.environ.get(name) for name in _SMTP_VARS))
    if values != _cached[0]:
        policy = parse_policy(values[0])
        named = {e for e in (operator_relay(*values[2:]), operator_s3(values[1])) if e is not None}
        if named:
            policy = Policy(policy.allow_all, policy.networks, policy.endpoints | named)
        _cached = (values, policy)
    return _cached[1]


# ---- checking and connecting ---------------------------------------------------------------------------------


async def checked_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in resolver order; DestinationRefused if any is not allowed."""
    host = host.removeprefix("[").removesuffix("]")
    try:
        addresses = [_parse_ip(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(_parse_ip(str(info[4][0])) for info in infos))
    return _allowed(host, port, addresses)


def checked_addresses_sync(host: str, port: int) -> list[str]:
    """:func:`checked_addresses` for blocking clients (botocore's urllib3 connections): resolve now, check
    every address, and connect only to what it returns."""
    host = host.removeprefix("[").removesuffix("]")
    try:
        addresses = [_parse_ip(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(_parse_ip(str(info[4][0])) for info in infos))
    return _allowed(host, port, addresses)


def _allowed(host: str, port: int, addresses: list[IPAddress]) -> list[str]:
    policy = current_policy()
    refused = [ip for ip in addresses if not policy.permits(host, ip, port)]
    if refused:
        # The addresses go to the log (for the operator), not to the workspace: they map its internal DNS.
        log.warning("refused a connection to %s:%s (%s): not public and not in %s",
                    host, port, ", ".join(map(str, refused)), ENV_VAR)
        raise DestinationRefused(
            f"refusing to connect to {host}:{port}: it is (or resolves to) a loopback, private, link-local or "
            f"otherwise non-public address; the operator can allow it with {ENV_VAR}")
    return [str(ip) for ip in addresses]


def _port_of(parts: typing.Any) -> int:
    try:
        port = parts.port
    except ValueError:
        raise DestinationRefused("the URL's port is not a number from 1 to 65535") from None
    return port or (443 if parts.scheme == "https" else 80)


def url_parts(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; DestinationRefused for another scheme or no host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused(f"unsupported URL scheme {parts.scheme!r} (http or https only)")
    if not parts.hostname:
        raise DestinationRefused("the URL has no host")
    return parts.hostname, _port_of(parts)


async def check_url(url: str) -> None:
    """Check ``url`` now (a clear, early refusal); connections made by :func:`async_client` check again."""
    await checked_addresses(*url_parts(url))


async def open_socket(host: str, port: int, *, timeout: float | None) -> socket.socket:
    """A TCP socket connected to a checked address of ``host`` (each tried in turn)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for address in await checked_addresses(host, port):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
            return sock
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else TimeoutError(f"connecting to {host}:{port} timed out")
    raise last or OSError(f"no address to connect to for {host}:{port}")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(checked_addresses(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        last: Exception | None = None
        for address in addresses:
            try:
                # The address, not the name: nothing resolves it again. TLS still uses the request's host.
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Any = None) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend. No proxy from the environment (a proxy would connect on
    its own, past the check); certificate settings from it (SSL_CERT_FILE, SSL_CERT_DIR) still apply."""

    def __init__(self, *, http1: bool = True, http2: bool = False, limits: httpx.Limits = DEFAULT_LIMITS,
                 verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(http1=http1, http2=http2, limits=limits, verify=verify)
        # httpx takes no network backend of its own; its pool (httpcore's, which does) is replaced by one
        # built with the same settings. tests/channels/test_egress.py fails if an upgrade bypasses it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=http1, http2=http2, network_backend=_GuardedBackend())


def async_client(*, http1: bool = True, http2: bool = False, limits: httpx.Limits = DEFAULT_LIMITS,
                 **client_options: typing.Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient whose every connection (redirects too) goes through the guard."""
    return httpx.AsyncClient(transport=GuardedTransport(http1=http1, http2=http2, limits=limits),
                             trust_env=False, **client_options)


__all__ = ["DestinationRefused", "Policy", "async_client", "check_url", "checked_addresses",
           "checked_addresses_sync", "current_policy",
           "embedded_ipv4", "is_public", "open_socket", "parse_policy", "url_parts", "ENV_VAR"]
