"""AWS Signature Version 4, verified: the signature is recomputed from the request as received with
botocore's own signer (SigV4Auth's canonical request, string to sign and key derivation), so what the SDK
signs is exactly what is checked. Also checked: the credential scope (date, service), that `host` and the
date are signed, the payload hash when one is sent, and a 5-minute clock skew window.

Refusals are 403 in the shape AWS's signer answers with (`x-amzn-ErrorType` + `{"message"}`).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tidings.api.pinpoint.errors import AuthFailure

SIGNING_NAME = "mobiletargeting"  # the model's signingName: what the SDK puts in the credential scope
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
                   r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*")
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # as received, still percent-encoded: it is what the client signed
    query_string: str
    headers: list[tuple[str, str]]  # lower-case names, in the order received
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True)
class Claim:
    """What the Authorization header claims, before the secret is known."""

    access_key_id: str
    region: str
    timestamp: str
    signed_headers: list[str]
    signature: str


def read_claim(request: SignedRequest, now: datetime) -> Claim:
    auth = request.header("authorization")
    if not auth:
        raise AuthFailure("MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _AUTH.fullmatch(auth)
    if m is None:
        raise AuthFailure("IncompleteSignatureException",
                          f"Authorization header requires {ALGORITHM} with Credential, SignedHeaders and Signature "
                          "parameters")
    parts = m.group("credential").split("/")
    if len(parts) != 5:
        raise AuthFailure("IncompleteSignatureException",
                          "Credential must have the form <key id>/<date>/<region>/<service>/aws4_request")
    key_id, scope_date, region, service, terminator = parts
    signed = m.group("signed").split(";")
    timestamp = request.header("x-amz-date")
    if timestamp is None:
        raise AuthFailure("IncompleteSignatureException", "Authorization requires the X-Amz-Date header")
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            raise AuthFailure("InvalidSignatureException", f"the {needed!r} header must be signed")
    try:
        when = datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise AuthFailure("IncompleteSignatureException",
                          f"X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z', got {timestamp!r}") from None
    stamp = now.strftime(SIGV4_TIMESTAMP)
    if when < now - MAX_SKEW:
        raise AuthFailure("InvalidSignatureException", f"Signature expired: {timestamp} is now earlier than "
                          f"{(now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)} ({stamp} - 5 min.)")
    if when > now + MAX_SKEW:
        raise AuthFailure("InvalidSignatureException", f"Signature not yet current: {timestamp} is still later "
                          f"than {(now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)} ({stamp} + 5 min.)")
    if scope_date != timestamp[:8] or terminator != "aws4_request":
        raise AuthFailure("InvalidSignatureException",
                          f"Credential should be scoped to a valid date and aws4_request, got {scope_date}/{terminator}")
    if service != SIGNING_NAME:
        raise AuthFailure("InvalidSignatureException", f"Credential should be scoped to correct service: '{SIGNING_NAME}'.")
    return Claim(key_id, region, timestamp, signed, m.group("signature"))


def check_signature(request: SignedRequest, claim: Claim, secret: str) -> None:
    """Recompute the signature with the stored secret; raise unless it matches the claim."""
    sent_hash = request.header("x-amz-content-sha256")
    if sent_hash is not None and sent_hash != hashlib.sha256(request.body).hexdigest():
        raise AuthFailure("InvalidSignatureException",
                          "The provided x-amz-content-sha256 header does not match what was computed.")
    host = request.header("host") or ""
    url = f"http://{host}{request.raw_path}" + (f"?{request.query_string}" if request.query_string else "")
    signable = AWSRequest(method=request.method, url=url, data=request.body)
    for name, value in request.headers:
        if name in claim.signed_headers:
            signable.headers[name] = value  # a repeated header is added again, as the signer joins them
    missing = [h for h in claim.signed_headers if h not in signable.headers]
    if missing:
        raise AuthFailure("InvalidSignatureException", f"signed header(s) not in the request: {', '.join(missing)}")
    signable.context["timestamp"] = claim.timestamp
    signer = SigV4Auth(Credentials(claim.access_key_id, secret), SIGNING_NAME, claim.region)
    expected = signer.signature(signer.string_to_sign(signable, signer.canonical_request(signable)), signable)
    if not hmac.compare_digest(expected, claim.signature):
        raise AuthFailure("InvalidSignatureException", MISMATCH)
