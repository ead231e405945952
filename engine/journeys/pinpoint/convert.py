"""`tidings pinpoint convert`: Pinpoint JSON files, as the AWS CLI or boto3 returned them, into Tidings YAML
resources in a folder (the journeys/ layout):
- journeys (GetJourney's `{"JourneyResponse": ...}`, ListJourneys' `{"JourneysResponse": {"Item": [...]}}`, or a
  bare journey object): one `<journey id>.yaml` each;
- segments (GetSegment's `{"SegmentResponse": ...}`, GetSegments' `{"SegmentsResponse": ...}`): one
  `segments/<segment id>.yaml` each, `kind: Segment`;
- templates (GetEmailTemplate's `{"EmailTemplateResponse": ...}` and the SMS, voice and push ones): one
  `templates/<template name>.yaml` each, `kind: Template`.
Each resource is translated and checked (journeys compiled); one Tidings cannot run is reported with its file
and the member that stops it (`Activities.<activity id>.<kind>`), and no file is written for it. Running it
again writes the same files."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.engine.journeys.language.compiler import compile_journey
from tidings.engine.journeys.language.issues import JourneyCompileError
from tidings.engine.journeys.language.yaml_view import ID_RE
from tidings.engine.journeys.pinpoint.resources import resources_in, segment_yaml, template_yaml
from tidings.engine.journeys.pinpoint.to_yaml import journey_yaml
from tidings.engine.platform.errors import TidingsError


@dataclass
class Outcome:
    source: Path
    journey: str  # the resource's Id or Name, or "" when the file could not be read
    written: Path | None = None
    error: str | None = None
    text: str = ""
    kind: str = "journey"  # journey | segment | template


def journeys_in(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "JourneyResponse" in data:
        return [data["JourneyResponse"]]
    if isinstance(data, dict) and "JourneysResponse" in data:
        return list((data["JourneysResponse"] or {}).get("Item") or [])
    if isinstance(data, dict) and "WriteJourneyRequest" in data:
        return [data["WriteJourneyRequest"]]
    if isinstance(data, list):
        return [j for item in data for j in journeys_in(item)]
    if isinstance(data, dict):
        return [data]
    raise ValueError("expected a Pinpoint journey (a JSON object), GetJourney's or ListJourneys' output")


def journey_id_of(journey: dict[str, Any], fallback: str) -> str:
    given = str(journey.get("Id") or "").lower()
    if ID_RE.match(given) and len(given) <= 100:
        return given
    slug = re.sub(r"[^a-z0-9_-]+", "-", str(journey.get("Name") or fallback).lower()).strip("-")[:100]
    return slug or "journey"


def _convert_resource(path: Path, out: Path, kind: str, source: Any) -> Outcome:
    label = str((source.get("Id") or source.get("Name") or source.get("TemplateName") or path.stem)
                if isinstance(source, dict) else path.stem)
    try:
        if not isinstance(source, dict):
            raise TypeError(f"expected a JSON object, got {type(source).__name__}")
        resource_id, text = segment_yaml(source) if kind == "Segment" else template_yaml(source)
    except TidingsError as exc:
        where = f" ({exc.field})" if exc.field and exc.field not in exc.message else ""
        return Outcome(path, label, error=exc.message + where, kind=kind.lower())
    except (AttributeError, TypeError, KeyError) as exc:  # a member of the wrong JSON type
        return Outcome(path, label, error=f"not a Pinpoint {kind.lower()}: {exc}", kind=kind.lower())
    folder = out / ("segments" if kind == "Segment" else "templates")
    return Outcome(path, label, written=folder / f"{resource_id}.yaml", text=text, kind=kind.lower())


def convert_file(path: Path, out: Path) -> list[Outcome]:
    """The journeys, segments and templates of one file, translated and checked (not yet written)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [Outcome(path, "", error=f"not readable as Pinpoint JSON: {exc}")]
    return convert_data(path, data, out)


def convert_data(path: Path, data: Any, out: Path) -> list[Outcome]:
    """The journeys, segments and templates of one JSON document (`path` names where it came from)."""
    others = resources_in(data)
    if others is not None:
        return [_convert_resource(path, out, kind, source) for kind, source in others]
    try:
        found = journeys_in(data)
    except ValueError as exc:
        return [Outcome(path, "", error=f"not readable as Pinpoint JSON: {exc}")]
    results = []
    for journey in found:
        journey = {k: v for k, v in journey.items() if k != "ResponseMetadata"} if isinstance(journey, dict) else journey
        label = (journey.get("Id") or journey.get("Name") or path.stem) if isinstance(journey, dict) else path.stem
        try:
            journey_id = journey_id_of(journey, path.stem)
            text = journey_yaml(journey, journey_id)
            target = out / f"{journey_id}.yaml"
            compile_journey(text, path=str(target))  # what `tidings validate` checks first; references are checked there
        except TidingsError as exc:
            results.append(Outcome(path, str(label), error=exc.message))
            continue
        except JourneyCompileError as exc:
            results.append(Outcome(path, str(label), error="; ".join(str(e) for e in exc.errors)))
            continue
        except (AttributeError, TypeError) as exc:  # a member of the wrong JSON type
            results.append(Outcome(path, str(label), error=f"not a Pinpoint journey: {exc}"))
            continue
        results.append(Outcome(path, str(label), written=target, text=text))
    return results


def convert(source: Path, out: Path) -> list[Outcome]:
    """Every `*.json` file of `source` (a file or a folder, searched recursively), converted into `out`."""
    files = sorted(source.rglob("*.json")) if source.is_dir() else [source]
    if not files:
        return [Outcome(source, "", error="no *.json files here")]
    return write([o for f in files for o in convert_file(f, out)])


def convert_fetched(documents: list[tuple[Path, Any]], out: Path) -> list[Outcome]:
    """What tidings.engine.journeys.pinpoint.fetch read from a live endpoint, converted into `out`."""
    return write([o for path, data in documents for o in convert_data(path, data, out)])


def write(outcomes: list[Outcome]) -> list[Outcome]:
    """Write the converted files, each once (an id written twice is refused) and only when it changed."""
    seen: dict[Path, Outcome] = {}
    for o in outcomes:  # two journeys of one id would overwrite each other's file
        if o.written in seen:
            o.error, o.written = f"its file {o.written} is also written from {seen[o.written].source}; give the " \
                                 f"{o.kind}s distinct ids", None
        elif o.written:
            seen[o.written] = o
    for o in seen.values():  # written once every journey is known, unchanged files left alone
        assert o.written is not None
        o.written.parent.mkdir(parents=True, exist_ok=True)
        if not o.written.exists() or o.written.read_text(encoding="utf-8") != o.text:
            o.written.write_text(o.text, encoding="utf-8")
    return outcomes
