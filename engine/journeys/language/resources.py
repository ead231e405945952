"""Reading YAML files into typed resources (Journey, Segment, Template, ...) and a catalog built from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tidings.engine.journeys.language.issues import Issues, Pos
from tidings.engine.journeys.language.yaml_loader import LMap, load_documents, plain

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Resource:
    """One `---` document. `doc` is plain dicts/lists; `line` is where the document starts."""

    kind: str
    id: str
    doc: dict[str, Any]
    path: str
    line: int
    located: Any = field(default=None, repr=False, compare=False)  # the same document with positions
    text: str = field(default="", repr=False, compare=False)  # its source text, for source_hash


def documents(text: str, path: str, issues: Issues) -> list[Resource]:
    """Every non-empty document of `text`; kind/id are "" when missing or not strings."""
    out = []
    for doc in load_documents(text, issues):
        if doc.value is None:  # an empty document, e.g. after a trailing `---`
            continue
        value = doc.value
        kind = value.get("kind") if isinstance(value, LMap) else None
        ident = value.get("id") if isinstance(value, LMap) else None
        out.append(Resource(kind=kind if isinstance(kind, str) else "", id=ident if isinstance(ident, str) else "",
                            doc=plain(value), path=path, line=doc.pos.line, located=value, text=doc.text))
    return out


def yaml_files(path: str | Path) -> list[Path]:
    """`path` itself if it is a file, else every *.yaml / *.yml under it, sorted for stable output."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())


def read_resources(path: str | Path, issues_by_file: dict[str, Issues]) -> list[Resource]:
    out = []
    for file in yaml_files(path):
        issues = issues_by_file.setdefault(str(file), Issues(str(file)))
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            issues.add(None, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
            continue
        out.extend(documents(text, str(file), issues))
    return out


def load_resources(path: str | Path) -> list[Resource]:
    """Every document in a file or folder. Raises JourneyCompileError on YAML errors or documents
    without a `kind` and `id`; the contents of each kind are checked by whoever applies it."""
    issues_by_file: dict[str, Issues] = {}
    resources = read_resources(path, issues_by_file)
    for res in resources:
        issues = issues_by_file[res.path]
        pos = res.located.pos if isinstance(res.located, LMap) else Pos(res.line, 1)
        if not isinstance(res.located, LMap):
            issues.add(pos, "a document must be a mapping with `apiVersion`, `kind` and `id`")
            continue
        for key, value in (("kind", res.kind), ("id", res.id)):
            if not value:
                issues.add(res.located.value_pos.get(key, pos), f"document needs a string `{key}`")
    merged = Issues("")
    for issues in issues_by_file.values():
        merged.items.extend(issues.items)
    merged.raise_if_any()
    return resources


class StaticCatalog:
    """A Catalog over fixed sets of ids; `channels=None` accepts every channel."""

    def __init__(self, segments: Iterable[str] = (), templates: Iterable[str] = (), channels: Iterable[str] | None = None):
        self.segments, self.templates = set(segments), set(templates)
        self.channels = None if channels is None else set(channels)

    @classmethod
    def from_resources(cls, resources: Iterable[Resource], channels: Iterable[str] | None = None) -> StaticCatalog:
        resources = list(resources)
        return cls(segments=[r.id for r in resources if r.kind == "Segment"],
                   templates=[r.id for r in resources if r.kind == "Template"], channels=channels)

    def has_segment(self, id: str) -> bool:
        return id in self.segments

    def has_template(self, id: str) -> bool:
        return id in self.templates

    def has_channel(self, name: str) -> bool:
        return self.channels is None or name in self.channels
