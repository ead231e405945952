"""A whole Pinpoint project read live, for `tidings pinpoint convert --application-id APP [--endpoint-url URL]`:
its journeys (ListJourneys), segments (GetSegments) and templates (ListTemplates, then each Get*Template,
since the list holds no content), page by page, with botocore's own client. Credentials and region are
found as the AWS CLI finds them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, AWS_REGION); the
endpoint is Pinpoint's, or any Pinpoint-compatible one (a Tidings API's `/pinpoint`)."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tidings.engine.messaging.pinpoint_templates import KINDS
from tidings.engine.platform.errors import TidingsError

PAGE = 100  # the largest page every listing accepts


class FetchFailed(TidingsError):
    """The endpoint refused or could not be reached; the message says which call and why."""


def _pages(call: Callable[..., dict[str, Any]], member: str, token_in: str, **params: Any) -> Iterator[dict[str, Any]]:
    token = None
    while True:
        page = call(**params, PageSize=str(PAGE), **({token_in: token} if token else {}))[member]
        yield from page.get("Item") or []
        token = page.get("NextToken")
        if not token:
            return


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClientError as exc:
        raise FetchFailed(f"{what}: {exc.response['Error'].get('Code')}: {exc.response['Error'].get('Message')}") \
            from None
    except BotoCoreError as exc:
        raise FetchFailed(f"{what}: {exc}") from None


def fetch_project(application_id: str, endpoint_url: str | None = None,
                  region: str | None = None) -> list[tuple[Path, Any]]:
    """(a label naming the call, its JSON as the AWS CLI would print it) for every resource of the project."""
    session = botocore.session.get_session()
    client = session.create_client("pinpoint", endpoint_url=endpoint_url,
                                   region_name=region or session.get_config_variable("region") or "us-east-1",
                                   config=Config(retries={"max_attempts": 3, "mode": "standard"}))
    where = endpoint_url or "pinpoint"
    journeys = _call("ListJourneys", lambda: list(_pages(client.list_journeys, "JourneysResponse", "Token",
                                                         ApplicationId=application_id)))
    segments = _call("GetSegments", lambda: list(_pages(client.get_segments, "SegmentsResponse", "Token",
                                                        ApplicationId=application_id)))
    listed = _call("ListTemplates", lambda: list(_pages(client.list_templates, "TemplatesResponse", "NextToken")))
    out: list[tuple[Path, Any]] = [
        (Path(where, "apps", application_id, "journeys"), {"JourneysResponse": {"Item": journeys}}),
        (Path(where, "apps", application_id, "segments"), {"SegmentsResponse": {"Item": segments}}),
    ]
    for item in listed:
        kind = KINDS.get(item.get("TemplateType"))
        if kind is None:  # an in-app template, say: converting it reports the type Tidings does not hold
            out.append((Path(where, "templates", item["TemplateName"]), item))
            continue
        get = getattr(client, f"get_{kind.op.lower()}_template")  # get_email_template, ..., get_push_template
        answer = _call(f"Get{kind.op}Template {item['TemplateName']}", partial(get, TemplateName=item["TemplateName"]))
        answer.pop("ResponseMetadata", None)
        out.append((Path(where, "templates", item["TemplateName"], kind.type.lower()), answer))
    return out
