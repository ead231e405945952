"""Pinpoint segments and message templates, as GetSegment(s) and Get*Template returned them, as Tidings
`kind: Segment` and `kind: Template` YAML documents (the folder layout `tidings apply` reads). The
translations are the ones the Pinpoint-compatible API stores (tidings.engine.segments.pinpoint_dimensions,
tidings.engine.messaging.pinpoint_templates), so a converted resource is what CreateSegment or
Create*Template would have made; what Tidings would refuse there is refused here with the same message."""
from __future__ import annotations

import json
from typing import Any

import msgspec
import yaml

from tidings.engine.journeys.language.yaml_loader import _Resolver as TidingsResolver
from tidings.engine.journeys.pinpoint.to_yaml import tidings_id
from tidings.engine.messaging.pinpoint_templates import KINDS, to_body
from tidings.engine.messaging.template_store import template_resource
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments.pinpoint_dimensions import segment_rule
from tidings.engine.segments.rules import expand

TEMPLATE_RESPONSES = {k.response: k for k in KINDS.values()}


class _Dumper(yaml.SafeDumper):
    """PyYAML's writer, quoting every string Tidings' YAML 1.2 reader would take for something else: PyYAML
    (YAML 1.1) leaves `8052024e6931`, a segment id, plain, and Tidings reads that back as a float."""


for _first, _resolvers in TidingsResolver.yaml_implicit_resolvers.items():
    for _tag, _pattern in _resolvers:
        _Dumper.add_implicit_resolver(_tag, _pattern, [_first])


def _dump(doc: dict[str, Any], **options: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, **options)


def _header(what: str, source: dict[str, Any]) -> str:
    name = source.get("Name") or source.get("TemplateName") or source.get("Id")
    return f"# Converted from the Pinpoint {what} {name!r} by `tidings pinpoint convert`.\n"


def _lower_segment_refs(node: Any) -> Any:
    """Segment ids inside a rule, as the converted segments' ids (journeys lower-case them too)."""
    if isinstance(node, dict):
        return {k: (str(v).lower() if k == "in_segment" else _lower_segment_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_lower_segment_refs(v) for v in node]
    return node


def segment_yaml(segment: dict[str, Any]) -> tuple[str, str]:
    """(the segment's Tidings id, its `kind: Segment` document)."""
    if segment.get("SegmentType") == "IMPORT":
        raise InvalidInput("SegmentType IMPORT: an imported segment's members are not in its definition; export "
                           "them (CreateExportJob) and import the file with `tidings segments import`",
                           field="SegmentType")
    seg_id = tidings_id(segment.get("Id"), "Id", "the segment id")
    rule = _lower_segment_refs(segment_rule(segment.get("Dimensions"), segment.get("SegmentGroups")))
    expand(rule)  # what saving it would check first (its in_segment references are checked when applied)
    doc = _dump({"apiVersion": "tidings/v1", "kind": "Segment", "id": seg_id, "name": segment.get("Name") or seg_id})
    return seg_id, _header("segment", segment) + doc + f"rule: {json.dumps(rule, ensure_ascii=False)}\n"


def template_yaml(template: dict[str, Any]) -> tuple[str, str]:
    """(the template's id, its `kind: Template` document)."""
    kind = KINDS.get(str(template.get("TemplateType")))
    if kind is None:
        raise InvalidInput(f"TemplateType {template.get('TemplateType')!r}: expected one of {', '.join(KINDS)}",
                           field="TemplateType")
    if not any(template.get(m) for m in ("Subject", "HtmlPart", "TextPart", "Body", "Default", "GCM", "APNS")):
        raise InvalidInput(f"template {template.get('TemplateName')!r} has no content (ListTemplates lists names "
                           f"only): fetch it with Get{kind.op}Template", field="TemplateName")
    template_id = tidings_id(template.get("TemplateName"), "TemplateName", "the template name")
    body = msgspec.to_builtins(to_body(kind, template))
    doc = {"apiVersion": "tidings/v1", "kind": "Template", "id": template_id, **body}
    template_resource(doc)  # renders as saving would check it: a template that cannot render is refused here
    return template_id, _header(f"{kind.type} template", template) + _dump(doc, width=120)


def resources_in(data: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """The segments and templates of one file's JSON as (kind, object), or None when it holds neither (then it
    is read as journeys)."""
    if isinstance(data, list):
        found = [resources_in(item) for item in data]
        if any(f is None for f in found):
            return None
        return [r for f in found if f for r in f]
    if not isinstance(data, dict):
        return None
    if "SegmentResponse" in data:
        return [("Segment", data["SegmentResponse"])]
    if "SegmentsResponse" in data:
        return [("Segment", s) for s in (data["SegmentsResponse"] or {}).get("Item") or []]
    for member in TEMPLATE_RESPONSES:
        if member in data:
            return [("Template", data[member])]
    if "TemplateType" in data and "TemplateName" in data:
        return [("Template", data)]
    if "SegmentType" in data or ("Dimensions" in data and "Activities" not in data):
        return [("Segment", data)]
    return None
