"""Import and export jobs through boto3: files in a real S3-compatible store (moto's server, as its own process
on a loopback port) and in folders, imported into new segments whose members the native API lists, bad rows
failing the job with nothing written, segments exported and read back, file:// outside the allowed root
refused, and other workspaces' keys seeing nothing."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import boto3
import httpx
import pytest

from tests.eventually import eventually
from tests.pinpoint.conftest import REGION, client_for, make_key

ROLE = "arn:aws:iam::123456789012:role/tidings-import"
CSV = (b"ChannelType,Address,Id,User.UserId,User.UserAttributes.plan,Attributes.team\n"
       b"EMAIL,ann@example.com,ep-ann,ann,pro,red\n"
       b"EMAIL,bob@example.com,ep-bob,bob,free,blue\n")
JSON_LINES = b"\n".join(json.dumps(row).encode() for row in [
    {"ChannelType": "EMAIL", "Address": "cy@example.com", "Id": "ep-cy", "User": {"UserId": "cy"}},
    {"ChannelType": "SMS", "Address": "+15550100", "Id": "ep-di", "User": {"UserId": "di",
                                                                          "UserAttributes": {"plan": ["pro"]}}},
]) + b"\n"


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    for name, value in {"TIDINGS_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                        "TIDINGS_IMPORT_ROOT": str(tmp_path / "allowed")}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    bucket = f"b{os.urandom(6).hex()}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client




def _members(native, segment_id):
    answer = native.get(f"/v1/segments/{segment_id}/members", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return sorted(m["user_id"] for m in answer.json()["items"])


def _created(pinpoint, url, fmt, name="imported"):
    """CreateImportJob's answer: at once, before the job has run."""
    job = pinpoint.create_import_job(ApplicationId="acme", ImportJobRequest={
        "S3Url": url, "Format": fmt, "RoleArn": ROLE, "DefineSegment": True, "SegmentName": name,
        "RegisterEndpoints": True})["ImportJobResponse"]
    assert job["JobStatus"] == "CREATED" and "CompletionDate" not in job and job["TotalProcessed"] == 0, job
    return job


def finished(pinpoint, kind: str, job_id: str, app: str = "acme") -> dict:
    """The job once it is COMPLETED or FAILED, as GetImportJob / GetExportJob show it."""
    def check():
        if kind == "IMPORT":
            job = pinpoint.get_import_job(ApplicationId=app, JobId=job_id)["ImportJobResponse"]
        else:
            job = pinpoint.get_export_job(ApplicationId=app, JobId=job_id)["ExportJobResponse"]
        return job if job["JobStatus"] in ("COMPLETED", "FAILED") else None
    job = eventually(check, 60, every=0.1, what=f"{kind} job {job_id} finishing")
    assert datetime.fromisoformat(job["CompletionDate"]) >= datetime.fromisoformat(job["CreationDate"]), job
    return job


def _import(pinpoint, url, fmt, name="imported"):
    """An import job run to its end."""
    return finished(pinpoint, "IMPORT", _created(pinpoint, url, fmt, name)["Id"])


def _export(pinpoint, request):
    job = pinpoint.create_export_job(ApplicationId="acme", ExportJobRequest=request)["ExportJobResponse"]
    assert job["JobStatus"] == "CREATED" and "CompletionDate" not in job and job["TotalProcessed"] == 0, job
    return finished(pinpoint, "EXPORT", job["Id"])


def test_csv_and_json_from_s3_become_segments(pinpoint, native, s3):
    s3.put_object(Bucket=s3.bucket, Key="in/people.csv", Body=CSV)
    s3.put_object(Bucket=s3.bucket, Key="in/people.json", Body=JSON_LINES)
    csv_job = _import(pinpoint, f"s3://{s3.bucket}/in/people.csv", "CSV", "from csv")
    json_job = _import(pinpoint, f"s3://{s3.bucket}/in/people.json", "JSON", "from json")
    for job, members in ((csv_job, ["ann", "bob"]), (json_job, ["cy", "di"])):
        assert job["JobStatus"] == "COMPLETED" and job["Type"] == "IMPORT", job
        assert job["TotalProcessed"] == 2 and job["FailedPieces"] == 0 and job["Failures"] == []
        segment_id = job["Definition"]["SegmentId"]
        assert _members(native, segment_id) == members
        segment = pinpoint.get_segment(ApplicationId="acme", SegmentId=segment_id)["SegmentResponse"]
        assert segment["SegmentType"] == "IMPORT"
        again = pinpoint.get_import_job(ApplicationId="acme", JobId=job["Id"])["ImportJobResponse"]
        assert again["JobStatus"] == "COMPLETED" and again["Definition"]["S3Url"] == job["Definition"]["S3Url"]
        listed = pinpoint.get_segment_import_jobs(ApplicationId="acme", SegmentId=segment_id)
        assert [j["Id"] for j in listed["ImportJobsResponse"]["Item"]] == [job["Id"]]
    endpoint = pinpoint.get_endpoint(ApplicationId="acme", EndpointId="ep-ann")["EndpointResponse"]
    assert endpoint["User"]["UserAttributes"] == {"plan": ["pro"]} and endpoint["Attributes"] == {"team": ["red"]}
    every = pinpoint.get_import_jobs(ApplicationId="acme")["ImportJobsResponse"]["Item"]
    assert sorted(j["Id"] for j in every) == sorted([csv_job["Id"], json_job["Id"]])


def test_bad_rows_fail_the_job_and_write_nothing(pinpoint, native, s3):
    s3.put_object(Bucket=s3.bucket, Key="bad.csv", Body=CSV + b"FAX,nowhere,ep-x,x,pro,red\nEMAIL,,ep-y,y,pro,red\n")
    job = _import(pinpoint, f"s3://{s3.bucket}/bad.csv", "CSV")
    assert job["JobStatus"] == "FAILED" and job["FailedPieces"] == 1 and job["TotalFailures"] == 2, job
    assert any("row 4" in f and "ChannelType" in f for f in job["Failures"]), job["Failures"]
    assert any("row 5" in f for f in job["Failures"]), job["Failures"]
    assert "SegmentId" not in job["Definition"]
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_endpoint(ApplicationId="acme", EndpointId="ep-ann")
    assert native.get("/v1/segments").json()["items"] == []
    assert pinpoint.get_import_job(ApplicationId="acme", JobId=job["Id"])["ImportJobResponse"]["JobStatus"] == "FAILED"


def test_other_schemes_are_refused_by_name_and_a_missing_object_fails_the_job(pinpoint, native, s3):
    for url, words in (("https://example.com/x.csv", "s3://"), ("s3:///key", "no bucket")):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as refused:
            _created(pinpoint, url, "CSV")
        message = refused.value.response["Error"]["Message"]
        assert "ImportJobRequest.S3Url" in message and words in message, message
    assert pinpoint.get_import_jobs(ApplicationId="acme")["ImportJobsResponse"]["Item"] == []
    # the object is read by the job, as Pinpoint reads it: a missing one fails the job, naming the reason
    job = _import(pinpoint, f"s3://{s3.bucket}/absent.csv", "CSV")
    assert job["JobStatus"] == "FAILED" and job["FailedPieces"] == 1 and job["CompletedPieces"] == 0, job
    assert any("ImportJobRequest.S3Url" in f and "NoSuchKey" in f for f in job["Failures"]), job["Failures"]
    assert native.get("/v1/segments").json()["items"] == []


def test_export_a_segment_to_s3_and_read_it_back(pinpoint, native, s3):
    s3.put_object(Bucket=s3.bucket, Key="people.csv", Body=CSV)
    segment_id = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")["Definition"]["SegmentId"]
    job = _export(pinpoint, {"S3UrlPrefix": f"s3://{s3.bucket}/out/", "RoleArn": ROLE, "SegmentId": segment_id})
    assert job["JobStatus"] == "COMPLETED" and job["TotalProcessed"] == 2 and job["CompletedPieces"] == 1, job
    body = s3.get_object(Bucket=s3.bucket, Key=f"out/{job['Id']}.json")["Body"].read()
    rows = sorted((json.loads(line) for line in body.splitlines()), key=lambda r: r["Id"])
    assert [(r["Id"], r["Address"], r["User"]["UserId"]) for r in rows] == [
        ("ep-ann", "ann@example.com", "ann"), ("ep-bob", "bob@example.com", "bob")]
    assert rows[0]["User"]["UserAttributes"] == {"plan": ["pro"]}
    # what Tidings exports, it imports again
    again = _import(pinpoint, f"s3://{s3.bucket}/out/{job['Id']}.json", "JSON", "round trip")
    assert _members(native, again["Definition"]["SegmentId"]) == ["ann", "bob"]
    listed = pinpoint.get_segment_export_jobs(ApplicationId="acme", SegmentId=segment_id)["ExportJobsResponse"]
    assert [j["Id"] for j in listed["Item"]] == [job["Id"]]
    assert pinpoint.get_export_job(ApplicationId="acme", JobId=job["Id"])["ExportJobResponse"]["Definition"][
        "SegmentVersion"] == 1
    assert [j["Id"] for j in pinpoint.get_export_jobs(ApplicationId="acme")["ExportJobsResponse"]["Item"]] == [
        job["Id"]]
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.create_export_job(ApplicationId="acme", ExportJobRequest={
            "S3UrlPrefix": f"s3://{s3.bucket}/out/", "RoleArn": ROLE, "SegmentId": "absent"})


def test_file_urls_only_inside_the_allowed_root(pinpoint, native, s3, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "people.csv").write_bytes(CSV)
    (tmp_path / "secret.csv").write_bytes(CSV)
    job = _import(pinpoint, (allowed / "people.csv").as_uri(), "CSV")
    assert job["JobStatus"] == "COMPLETED" and _members(native, job["Definition"]["SegmentId"]) == ["ann", "bob"]
    for url in ((tmp_path / "secret.csv").as_uri(), f"file://{allowed}/../secret.csv", "file:///etc/passwd"):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as refused:
            _import(pinpoint, url, "CSV")
        message = refused.value.response["Error"]["Message"]
        assert "ImportJobRequest.S3Url" in message and "TIDINGS_IMPORT_ROOT" in message, message
    exported = _export(pinpoint, {"S3UrlPrefix": (allowed / "out").as_uri(), "RoleArn": ROLE,
                                  "SegmentId": job["Definition"]["SegmentId"]})
    assert len((allowed / "out" / f"{exported['Id']}.json").read_bytes().splitlines()) == 2


def test_file_urls_refused_when_no_root_is_set(pinpoint, s3, tmp_path, monkeypatch):
    monkeypatch.delenv("TIDINGS_IMPORT_ROOT")
    (tmp_path / "people.csv").write_bytes(CSV)
    with pytest.raises(pinpoint.exceptions.BadRequestException) as refused:
        _import(pinpoint, (tmp_path / "people.csv").as_uri(), "CSV")
    assert "TIDINGS_IMPORT_ROOT is not set" in refused.value.response["Error"]["Message"]


def test_another_workspace_key_sees_not_found(running_api, pinpoint, s3):
    s3.put_object(Bucket=s3.bucket, Key="people.csv", Body=CSV)
    job = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_import_job(ApplicationId="globex", JobId=job["Id"])
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_import_job(ApplicationId="acme", JobId=job["Id"])
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_segment_import_jobs(ApplicationId="globex", SegmentId=job["Definition"]["SegmentId"])
    assert other.get_import_jobs(ApplicationId="globex")["ImportJobsResponse"]["Item"] == []


def test_an_s3_endpoint_the_operator_did_not_configure_goes_through_the_ssrf_guard(pinpoint, native, s3,
                                                                                    s3_endpoint, monkeypatch):
    """Without TIDINGS_S3_ENDPOINT_URL the store is wherever botocore's own settings say (AWS's S3, or
    AWS_ENDPOINT_URL_S3): a loopback address there is refused unless the operator allows it."""
    s3.put_object(Bucket=s3.bucket, Key="people.csv", Body=CSV)
    monkeypatch.delenv("TIDINGS_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "")  # the tests' default allows loopback
    with pytest.raises(pinpoint.exceptions.BadRequestException) as refused:
        _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    message = refused.value.response["Error"]["Message"]
    assert "ImportJobRequest.S3Url" in message and "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in message, message
    assert native.get("/v1/segments").json()["items"] == []
    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "127.0.0.1")
    job = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    assert job["JobStatus"] == "COMPLETED" and _members(native, job["Definition"]["SegmentId"]) == ["ann", "bob"]


REBOUND = "localhost.rebinding.test"  # moto reads a bucket out of other host names (virtual hosting)


@pytest.fixture
def rebinding_dns(monkeypatch):
    """A name that first resolves to a public address, then (DNS rebinding) to loopback, as a hostile
    resolver answers; every other name resolves as usual."""
    real = socket.getaddrinfo
    calls = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != REBOUND:
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "93.184.215.14" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_a_name_resolving_to_loopback_is_refused_when_the_job_connects(pinpoint, native, s3, s3_endpoint,
                                                                      monkeypatch, rebinding_dns):
    """The guard checks the address the job's connection goes to, not only the name at CreateImportJob: a name
    that resolved to a public address then rebinds to loopback fails the job, nothing written; allowed by the
    operator, the same name reaches the store."""
    s3.put_object(Bucket=s3.bucket, Key="people.csv", Body=CSV)
    port = s3_endpoint.rsplit(":", 1)[1]
    monkeypatch.delenv("TIDINGS_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{REBOUND}:{port}")
    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "")
    job = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    assert len(rebinding_dns) >= 2  # the early check saw the public address; the connection, loopback
    assert job["JobStatus"] == "FAILED" and job["FailedPieces"] == 1, job
    assert job["Failures"] == [f"ImportJobRequest.S3Url: s3://{s3.bucket}/people.csv: the S3 endpoint is refused: "
                               f"refusing to connect to {REBOUND}:{port}: it is (or resolves to) a loopback, private, "
                               "link-local or otherwise non-public address; the operator can allow it with "
                               "TIDINGS_ALLOW_PRIVATE_DESTINATIONS"], job["Failures"]
    assert native.get("/v1/segments").json()["items"] == []
    # an export is refused the same way: nothing is written to the store
    segment = native.post("/v1/segments", json={"id": "all", "name": "All", "rule": {"==": [1, 1]}})
    assert segment.status_code in (200, 201), segment.text
    rebinding_dns.clear()
    exported = _export(pinpoint, {"S3UrlPrefix": f"s3://{s3.bucket}/out/", "RoleArn": ROLE, "SegmentId": "all"})
    assert exported["JobStatus"] == "FAILED" and "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in exported["Failures"][0]
    assert "Contents" not in s3.list_objects_v2(Bucket=s3.bucket, Prefix="out/")

    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "127.0.0.1")
    rebinding_dns.clear()
    job = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    assert job["JobStatus"] == "COMPLETED", job["Failures"]
    assert _members(native, job["Definition"]["SegmentId"]) == ["ann", "bob"]


def test_a_hostname_resolving_to_loopback_is_refused_at_create_unless_allowed(pinpoint, native, s3, s3_endpoint,
                                                                             monkeypatch):
    s3.put_object(Bucket=s3.bucket, Key="people.csv", Body=CSV)
    monkeypatch.delenv("TIDINGS_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint.replace("127.0.0.1", "localhost"))
    monkeypatch.setenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "")
    with pytest.raises(pinpoint.exceptions.BadRequestException) as refused:
        _created(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    message = refused.value.response["Error"]["Message"]
    assert "ImportJobRequest.S3Url" in message and "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in message, message
    assert pinpoint.get_import_jobs(ApplicationId="acme")["ImportJobsResponse"]["Item"] == []
    # the operator's own store (TIDINGS_S3_ENDPOINT_URL) is allowed as named, like the SMTP relay
    monkeypatch.setenv("TIDINGS_S3_ENDPOINT_URL", s3_endpoint.replace("127.0.0.1", "localhost"))
    job = _import(pinpoint, f"s3://{s3.bucket}/people.csv", "CSV")
    assert job["JobStatus"] == "COMPLETED" and _members(native, job["Definition"]["SegmentId"]) == ["ann", "bob"]
