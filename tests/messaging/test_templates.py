"""Template rendering and validation."""

from __future__ import annotations

import msgspec
import pytest

from tidings.engine.channels.contract import ChannelType
from tidings.engine.messaging.templates import (
    Template, TemplateError, TemplateParts, TemplateRenderError, render, template_errors, validate_template,
)

CTX = {
    "user": {"user_id": "u-42", "attributes": {"FirstName": ["Ana"], "Plan": "pro", "Tags": ["a", "b"]},
             "metrics": {"orders": 3}, "locale": "fr-CA", "timezone": "America/Montreal"},
    "endpoint": {"id": "ep-1", "channel": "EMAIL", "address": "ana@example.com",
                 "attributes": {"Interests": ["ski"]}, "metrics": {"opens": 7},
                 "demographic": {"Platform": "ios"}, "location": {"City": "Montréal"}},
    "data": {"code": "<b>123</b>", "items": [{"name": "Skis"}]},
}


def email(**parts) -> Template:
    defaults = parts.pop("defaults", {})
    locales = parts.pop("locales", {})
    parts.setdefault("subject", "Hi")
    parts.setdefault("text", "text")
    return Template(id="t1", channel_type=ChannelType.EMAIL, parts=TemplateParts(**parts),
                    defaults=defaults, locales=locales)


def test_personalization_with_native_and_pinpoint_names():
    t = email(
        subject="Hello {{ user.attributes.FirstName }}",
        text="{{User.UserAttributes.FirstName}} ({{User.UserId}}) via {{Address}} {{Id}} {{ChannelType}} "
             "{{Attributes.Interests}} {{Metrics.opens}} {{Demographic.Platform}} {{Location.City}} "
             "{{ user.metrics.orders }} {{ User.UserAttributes.Tags }} {{ User.UserAttributes.Tags[1] }}",
    )
    out = render(t, CTX, locale="en")
    assert out.subject == "Hello Ana"
    assert out.text == "Ana (u-42) via ana@example.com ep-1 EMAIL ski 7 ios Montréal 3 a, b b"


def test_missing_values_use_defaults_or_render_empty():
    t = email(
        subject="Hi {{User.UserAttributes.Nickname}}!",
        text="[{{ data.missing }}][{{ user.attributes.Nope.deeper }}][{{ data.code2 | default('x') }}][{{Address}}]",
        defaults={"User.UserAttributes.Nickname": "friend", "endpoint.address": "n/a"},
    )
    out = render(t, {})
    assert out.subject == "Hi friend!"
    assert out.text == "[][][x][n/a]"
    # A present value wins over the default; the caller's context is not mutated.
    ctx = {"user": {"attributes": {"Nickname": ["Zed"]}}}
    assert render(t, ctx).subject == "Hi Zed!"
    assert ctx == {"user": {"attributes": {"Nickname": ["Zed"]}}}
    # An empty Pinpoint value counts as missing.
    assert render(t, {"user": {"attributes": {"Nickname": []}}}).subject == "Hi friend!"


def test_locale_fallback_exact_then_language_then_base():
    t = email(
        subject="Hello", text="Base text",
        locales={"fr": TemplateParts(subject="Bonjour", text="Texte fr"),
                 "fr-CA": TemplateParts(subject="Allô")},
    )
    ca = render(t, CTX, locale="fr-CA")
    assert (ca.subject, ca.text, ca.locale) == ("Allô", "Texte fr", "fr-CA")
    fr = render(t, CTX, locale="fr_FR")
    assert (fr.subject, fr.text, fr.locale) == ("Bonjour", "Texte fr", "fr")
    de = render(t, CTX, locale="de-DE")
    assert (de.subject, de.text, de.locale) == ("Hello", "Base text", None)
    # Without an explicit locale, the user's locale is used.
    assert render(t, CTX).subject == "Allô"


def test_html_is_escaped_but_text_and_subject_are_not():
    t = email(subject="Code {{ data.code }}", html="<p>{{ data.code }}</p>", text="{{ data.code }}")
    out = render(t, CTX)
    assert out.html == "<p>&lt;b&gt;123&lt;/b&gt;</p>"
    assert out.text == "<b>123</b>"
    assert out.subject == "Code <b>123</b>"


def test_subject_cannot_inject_headers():
    t = email(subject="Hi {{ data.s }}")
    assert render(t, {"data": {"s": "x\r\nBcc: evil@example.com"}}).subject == "Hi x Bcc: evil@example.com"


@pytest.mark.parametrize("expr", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ data['__class__'] }}",
    "{{ data|attr('__class__') }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_sandbox_blocks_introspection(expr):
    t = email(text=expr)
    with pytest.raises(TemplateError) as e:
        validate_template(t)
    assert e.value.part == "text" and e.value.line == 1
    with pytest.raises(TemplateRenderError) as r:
        render(t, CTX)
    assert r.value.part == "text"


def test_sandbox_blocks_mutating_context():
    t = email(text="{{ data['items'].append(1) }}")
    with pytest.raises(TemplateRenderError):
        render(t, CTX)


def test_validation_names_part_and_line():
    t = email(html="<p>\n{{ user.name \n</p>")
    with pytest.raises(TemplateError) as e:
        validate_template(t)
    assert e.value.part == "html" and e.value.line == 3
    t = email(text="a\nb\n{{ x | frobnicate }}")
    [err] = template_errors(t)
    assert (err.part, err.line) == ("text", 3) and "frobnicate" in err.message
    t = email(text="ok", locales={"fr": TemplateParts(subject="{% if %}")})
    [err] = template_errors(t)
    assert err.part == "locales.fr.subject"
    push = Template(id="p", channel_type=ChannelType.PUSH,
                    parts=TemplateParts(title="t", data={"url": "{{ x | nope }}"}))
    assert template_errors(push)[0].part == "data.url"


def test_unknown_filter_inside_condition_is_caught_at_save_time():
    [err] = template_errors(email(text="{% if x %}\n{{ y | nope }}{% endif %}"))
    assert err.line == 2 and "nope" in err.message


def test_handlebars_blocks_are_explained():
    [err] = template_errors(email(text="{{#if User.UserId}}hi{{/if}}"))
    assert "Handlebars" in err.message


def test_channel_part_requirements():
    assert template_errors(Template(id="s", channel_type=ChannelType.SMS, parts=TemplateParts()))[0].part == "body"
    errs = template_errors(Template(id="s", channel_type=ChannelType.SMS, parts=TemplateParts(body="x", html="<p>")))
    assert errs[0].part == "html" and "not used" in errs[0].message
    validate_template(Template(id="v", channel_type=ChannelType.VOICE, parts=TemplateParts(text="Hi")))


def test_push_data_and_sms():
    push = Template(id="p", channel_type=ChannelType.PUSH,
                    parts=TemplateParts(title="Hi {{User.UserAttributes.FirstName}}", body="{{data.code}}",
                                        data={"url": "acme://o/{{ data['items'][0].name | lower }}"}))
    out = render(push, CTX)
    assert (out.title, out.body, out.data) == ("Hi Ana", "<b>123</b>", {"url": "acme://o/skis"})
    sms = Template(id="s", channel_type=ChannelType.SMS, parts=TemplateParts(body="{{ data.code }}"))
    assert render(sms, CTX).body == "<b>123</b>"


def test_render_errors_never_escape_as_other_exceptions():
    t = email(text="{{ 1 / 0 }}")
    with pytest.raises(TemplateRenderError) as e:
        render(t, CTX)
    assert e.value.part == "text" and "ZeroDivisionError" in e.value.message
    with pytest.raises(TemplateRenderError):
        render(email(text="{{ x }"), CTX)  # never validated: still a render error


def test_template_round_trips_as_json():
    t = email(html="<p>{{ x }}</p>", locales={"fr": TemplateParts(subject="Salut")},
              defaults={"data.x": "y"})
    again = msgspec.json.decode(msgspec.json.encode(t), type=Template)
    assert again == t
