"""Message templates through boto3: a template made with Create*Template is the native template of that name
(sent by /v1/messages and SendMessages, read by /v1/templates) and a native one reads back through Pinpoint;
versions are numbered 1, 2, 3 ..., the active one is what sends render; what Tidings cannot apply is refused
naming the member."""
from __future__ import annotations

import json

import pytest

from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real SMTP server, the default EMAIL channel)
from tests.pinpoint.conftest import client_for, make_key

EMAIL = {"Subject": "Hi {{User.UserAttributes.FirstName}}",
         "HtmlPart": "<p>Plan {{Attributes.plan}} for {{Address}}</p>",
         "TextPart": "Plan {{Attributes.plan}} for {{Address}}, {{User.UserAttributes.FirstName}}",
         "DefaultSubstitutions": json.dumps({"User.UserAttributes.FirstName": "friend", "Attributes.plan": "free"}),
         "TemplateDescription": "the welcome mail"}


@pytest.fixture
def mail_api(smtp_sink, running_api):  # noqa: F811  (the sink's settings must exist before the API starts)
    return running_api


def _text(mail):
    return mail.get_body(("plain",)).get_content()


def _error(caught):
    return caught.value.response["Error"]["Message"]


def test_a_pinpoint_template_is_the_native_one_and_renders_pinpoint_variables(smtp_sink, mail_api, pinpoint,  # noqa: F811
                                                                               native):
    created = pinpoint.create_email_template(TemplateName="welcome", EmailTemplateRequest=EMAIL)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["CreateTemplateMessageBody"]["Arn"].endswith(":templates/welcome/EMAIL")
    got = pinpoint.get_email_template(TemplateName="welcome")["EmailTemplateResponse"]
    assert {k: got[k] for k in EMAIL} == EMAIL
    assert got["TemplateName"] == "welcome" and got["TemplateType"] == "EMAIL" and got["Version"] == "1"
    assert got["CreationDate"] and got["LastModifiedDate"] and got["tags"] == {}
    stored = native.get("/v1/templates/welcome").json()
    assert stored["channel"] == "EMAIL" and stored["subject"] == EMAIL["Subject"] and stored["version"] == 1

    pinpoint.update_endpoint(ApplicationId="acme", EndpointId="ann-mail", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "ann@example.com", "Attributes": {"plan": ["pro"]},
        "User": {"UserId": "ann", "UserAttributes": {"FirstName": ["Ann"]}}})
    # A native send by template id, to an endpoint (its attributes) and to a bare address (the defaults).
    answer = native.post("/v1/messages", json={"channel": "EMAIL", "template_id": "welcome", "recipients": [
        {"endpoint_id": "ann-mail"}, {"address": "zoe@example.org"}]})
    assert answer.status_code == 200, answer.text
    ann, zoe = smtp_sink.to("ann@example.com")[0], smtp_sink.to("zoe@example.org")[0]
    assert ann["Subject"] == "Hi Ann" and _text(ann) .startswith("Plan pro for ann@example.com, Ann")
    assert zoe["Subject"] == "Hi friend" and _text(zoe).startswith("Plan free for zoe@example.org, friend")
    # The same template through SendMessages renders the same.
    sent = pinpoint.send_messages(ApplicationId="acme", MessageRequest={
        "Endpoints": {"ann-mail": {}}, "MessageConfiguration": {},
        "TemplateConfiguration": {"EmailTemplate": {"Name": "welcome"}}})["MessageResponse"]
    assert sent["EndpointResult"]["ann-mail"]["DeliveryStatus"] == "SUCCESSFUL"
    again = smtp_sink.to("ann@example.com")[1]
    assert again["Subject"] == ann["Subject"] and _text(again) == _text(ann)


def test_a_native_template_reads_back_and_lists_through_pinpoint(pinpoint, native):
    put = native.put("/v1/templates/code-sms", json={"channel": "SMS", "body": "Code {{data.code}}",
                                                      "defaults": {"code": "0000"}})
    assert put.status_code in (200, 201), put.text
    native.put("/v1/templates/hook", json={"channel": "WEBHOOK", "body": "{}"})
    got = pinpoint.get_sms_template(TemplateName="code-sms")["SMSTemplateResponse"]
    assert got["Body"] == "Code {{data.code}}" and json.loads(got["DefaultSubstitutions"]) == {"code": "0000"}
    assert got["Version"] == "1"
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_email_template(TemplateName="code-sms")  # another channel's template
    pinpoint.create_email_template(TemplateName="a-mail", EmailTemplateRequest={"Subject": "s", "TextPart": "t"})
    pinpoint.create_voice_template(TemplateName="a-call", VoiceTemplateRequest={"Body": "Hello {{Address}}"})
    names = [(t["TemplateName"], t["TemplateType"], t["Version"])
             for t in pinpoint.list_templates()["TemplatesResponse"]["Item"]]
    assert names == [("a-call", "VOICE", "1"), ("a-mail", "EMAIL", "1"), ("code-sms", "SMS", "1")]  # no webhook
    assert [t["TemplateName"] for t in pinpoint.list_templates(TemplateType="EMAIL")["TemplatesResponse"]["Item"]] \
        == ["a-mail"]
    assert [t["TemplateName"] for t in pinpoint.list_templates(Prefix="a-")["TemplatesResponse"]["Item"]] \
        == ["a-call", "a-mail"]
    first = pinpoint.list_templates(PageSize="2")["TemplatesResponse"]
    second = pinpoint.list_templates(PageSize="2", NextToken=first["NextToken"])["TemplatesResponse"]
    assert [t["TemplateName"] for t in first["Item"] + second["Item"]] == ["a-call", "a-mail", "code-sms"]
    assert "NextToken" not in second
    assert pinpoint.list_templates(TemplateType="INAPP")["TemplatesResponse"]["Item"] == []
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.list_templates(TemplateType="FAX")
    assert "TemplateType" in _error(caught)


def test_versions_and_the_active_version(smtp_sink, mail_api, pinpoint, native):  # noqa: F811
    def send(address):
        native.post("/v1/messages", json={"channel": "EMAIL", "template_id": "news",
                                          "recipients": [{"address": address}]}).raise_for_status()
        return smtp_sink.to(address)[-1]["Subject"]

    pinpoint.create_email_template(TemplateName="news", EmailTemplateRequest={"Subject": "one", "TextPart": "t"})
    # Without CreateNewVersion the latest version is overwritten: still version 1.
    pinpoint.update_email_template(TemplateName="news", EmailTemplateRequest={"Subject": "one bis", "TextPart": "t"})
    assert pinpoint.get_email_template(TemplateName="news")["EmailTemplateResponse"]["Version"] == "1"
    assert send("a@example.com") == "one bis"
    # A new version is not active until UpdateTemplateActiveVersion says so.
    answer = pinpoint.update_email_template(TemplateName="news", CreateNewVersion=True,
                                            EmailTemplateRequest={"Subject": "two", "TextPart": "t"})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    active = pinpoint.get_email_template(TemplateName="news")["EmailTemplateResponse"]
    assert (active["Version"], active["Subject"]) == ("1", "one bis")
    assert pinpoint.get_email_template(TemplateName="news", Version="2")["EmailTemplateResponse"]["Subject"] == "two"
    assert send("b@example.com") == "one bis"
    # SendMessages may name the active version, and no other.
    def pinpoint_send(address, version):
        return pinpoint.send_messages(ApplicationId="acme", MessageRequest={
            "Addresses": {address: {"ChannelType": "EMAIL"}}, "MessageConfiguration": {},
            "TemplateConfiguration": {"EmailTemplate": {"Name": "news", "Version": version}}})
    pinpoint_send("e@example.com", "1")
    assert smtp_sink.to("e@example.com")[0]["Subject"] == "one bis"
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint_send("f@example.com", "2")
    assert "TemplateConfiguration.EmailTemplate.Version" in _error(caught) and "active" in _error(caught)
    assert smtp_sink.to("f@example.com") == []
    versions = pinpoint.list_template_versions(TemplateName="news", TemplateType="EMAIL")["TemplateVersionsResponse"]
    assert [v["Version"] for v in versions["Item"]] == ["1", "2"]
    page = pinpoint.list_template_versions(TemplateName="news", TemplateType="EMAIL", PageSize="1")[
        "TemplateVersionsResponse"]
    assert [v["Version"] for v in page["Item"]] == ["1"] and page["NextToken"] == "1"
    pinpoint.update_template_active_version(TemplateName="news", TemplateType="EMAIL",
                                            TemplateActiveVersionRequest={"Version": "2"})
    assert pinpoint.get_email_template(TemplateName="news")["EmailTemplateResponse"]["Version"] == "2"
    assert send("c@example.com") == "two"
    assert native.get("/v1/templates/news").json()["version"] == 2
    # A native save of a changed template adds a version and makes it active.
    native.put("/v1/templates/news", json={"channel": "EMAIL", "subject": "three", "text": "t"}).raise_for_status()
    got = pinpoint.get_email_template(TemplateName="news")["EmailTemplateResponse"]
    assert (got["Version"], got["Subject"]) == ("3", "three")
    pinpoint.update_template_active_version(TemplateName="news", TemplateType="EMAIL",
                                            TemplateActiveVersionRequest={"Version": "1"})
    assert send("d@example.com") == "one bis"
    # One version that is not active can go; the active one cannot; the whole template can.
    pinpoint.delete_email_template(TemplateName="news", Version="2")
    assert [v["Version"] for v in pinpoint.list_template_versions(
        TemplateName="news", TemplateType="EMAIL")["TemplateVersionsResponse"]["Item"]] == ["1", "3"]
    with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
        pinpoint.delete_email_template(TemplateName="news", Version="1")
    assert "active" in _error(caught)
    pinpoint.delete_email_template(TemplateName="news")
    with pytest.raises(pinpoint.exceptions.NotFoundException):
        pinpoint.get_email_template(TemplateName="news")
    assert native.get("/v1/templates/news").status_code == 404


def test_version_errors(pinpoint):
    pinpoint.create_sms_template(TemplateName="otp", SMSTemplateRequest={"Body": "v1"})
    pinpoint.update_sms_template(TemplateName="otp", CreateNewVersion=True, SMSTemplateRequest={"Body": "v2"})
    cases = [
        (lambda: pinpoint.get_sms_template(TemplateName="otp", Version="x"), "BadRequestException", "Version"),
        (lambda: pinpoint.get_sms_template(TemplateName="otp", Version="9"), "NotFoundException", "version 9"),
        (lambda: pinpoint.update_sms_template(TemplateName="otp", Version="1", SMSTemplateRequest={"Body": "b"}),
         "BadRequestException", "latest"),
        (lambda: pinpoint.update_sms_template(TemplateName="otp", Version="2", CreateNewVersion=True,
                                              SMSTemplateRequest={"Body": "b"}), "BadRequestException", "version"),
        (lambda: pinpoint.update_template_active_version(TemplateName="otp", TemplateType="SMS",
                                                         TemplateActiveVersionRequest={"Version": "7"}),
         "NotFoundException", "Version"),
        (lambda: pinpoint.update_template_active_version(TemplateName="otp", TemplateType="SMS",
                                                         TemplateActiveVersionRequest={}),
         "BadRequestException", "Version"),
        (lambda: pinpoint.delete_sms_template(TemplateName="otp", Version="5"), "NotFoundException", "version 5"),
        (lambda: pinpoint.list_template_versions(TemplateName="nope", TemplateType="SMS"), "NotFoundException", "nope"),
        (lambda: pinpoint.update_sms_template(TemplateName="nope", SMSTemplateRequest={"Body": "b"}),
         "NotFoundException", "nope"),
    ]
    for call, code, words in cases:
        with pytest.raises(pinpoint.exceptions.ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == code, _error(caught)
        assert words in _error(caught)
    pinpoint.update_template_active_version(TemplateName="otp", TemplateType="SMS",
                                            TemplateActiveVersionRequest={"Version": "latest"})
    assert pinpoint.get_sms_template(TemplateName="otp")["SMSTemplateResponse"]["Body"] == "v2"
    # Overwriting the latest version by its number is allowed.
    pinpoint.update_sms_template(TemplateName="otp", Version="2", SMSTemplateRequest={"Body": "v2 bis"})
    assert pinpoint.get_sms_template(TemplateName="otp")["SMSTemplateResponse"]["Body"] == "v2 bis"


def test_push_and_voice_templates(pinpoint, native):
    pinpoint.create_push_template(TemplateName="ping", PushNotificationTemplateRequest={
        "Default": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "New for you", "Action": "URL",
                    "Url": "https://example.com/x"},
        "GCM": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "New for you", "Action": "URL",
                "Url": "https://example.com/x"}})
    got = pinpoint.get_push_template(TemplateName="ping")["PushNotificationTemplateResponse"]
    assert got["Default"] == {"Title": "Hi {{User.UserAttributes.FirstName}}", "Body": "New for you",
                              "Action": "URL", "Url": "https://example.com/x"}
    stored = native.get("/v1/templates/ping").json()
    assert stored["channel"] == "PUSH" and stored["data"] == {"action": "URL", "url": "https://example.com/x"}
    pinpoint.create_voice_template(TemplateName="call", VoiceTemplateRequest={"Body": "Your code is {{data.code}}"})
    assert pinpoint.get_voice_template(TemplateName="call")["VoiceTemplateResponse"]["Body"] == \
        "Your code is {{data.code}}"
    assert native.get("/v1/templates/call").json()["text"] == "Your code is {{data.code}}"


def test_what_tidings_cannot_apply_is_refused_by_name(pinpoint, native):
    cases = [
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={
            "Subject": "s", "TextPart": "t", "RecommenderId": "rec-1"}), "EmailTemplateRequest.RecommenderId"),
        (lambda: pinpoint.create_sms_template(TemplateName="r", SMSTemplateRequest={
            "Body": "b", "RecommenderId": "rec-1"}), "SMSTemplateRequest.RecommenderId"),
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={
            "Subject": "s", "HtmlPart": "<p>{% if %}</p>"}), "EmailTemplateRequest.HtmlPart"),
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={"TextPart": "t"}),
         "EmailTemplateRequest.Subject"),
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={
            "Subject": "s", "TextPart": "t", "DefaultSubstitutions": "not json"}), "DefaultSubstitutions"),
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={
            "Subject": "s", "TextPart": "t", "DefaultSubstitutions": "[1]"}), "DefaultSubstitutions"),
        (lambda: pinpoint.create_email_template(TemplateName="r", EmailTemplateRequest={
            "Subject": "s", "TextPart": "t", "Headers": [{"Name": "X-A", "Value": "1"}]}), "Headers"),
        (lambda: pinpoint.create_voice_template(TemplateName="r", VoiceTemplateRequest={
            "Body": "b", "VoiceId": "Joanna"}), "VoiceTemplateRequest.VoiceId"),
        (lambda: pinpoint.create_push_template(TemplateName="r", PushNotificationTemplateRequest={
            "Default": {"Body": "b", "Sound": "ding"}}), "Default.Sound"),
        (lambda: pinpoint.create_push_template(TemplateName="r", PushNotificationTemplateRequest={
            "Default": {"Body": "b"}, "APNS": {"Body": "other"}}), "PushNotificationTemplateRequest.APNS"),
        (lambda: pinpoint.create_sms_template(TemplateName="bad name!", SMSTemplateRequest={"Body": "b"}),
         "TemplateName"),
        (lambda: pinpoint.create_sms_template(TemplateName="r", SMSTemplateRequest={"Body": "b", "tags": {
            "aws:x": "1"}}), "aws:"),
    ]
    for call, words in cases:
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            call()
        assert words in _error(caught)
    assert native.get("/v1/templates/r").status_code == 404  # nothing half-written
    pinpoint.create_sms_template(TemplateName="taken", SMSTemplateRequest={"Body": "b"})
    for call in (lambda: pinpoint.create_sms_template(TemplateName="taken", SMSTemplateRequest={"Body": "b"}),
                 lambda: pinpoint.create_email_template(TemplateName="taken", EmailTemplateRequest={
                     "Subject": "s", "TextPart": "t"})):
        with pytest.raises(pinpoint.exceptions.BadRequestException) as caught:
            call()
        assert "already exists" in _error(caught)


def test_templates_belong_to_the_key_pairs_workspace(running_api, pinpoint):
    pinpoint.create_sms_template(TemplateName="mine", SMSTemplateRequest={"Body": "b"})
    other = client_for(running_api, make_key(running_api.database_url, "globex"))
    with pytest.raises(other.exceptions.NotFoundException):
        other.get_sms_template(TemplateName="mine")
    assert other.list_templates()["TemplatesResponse"]["Item"] == []
    admin = client_for(running_api, make_key(running_api.database_url, None))
    with pytest.raises(admin.exceptions.BadRequestException) as caught:
        admin.list_templates()
    assert "workspace" in _error(caught)
