"""YAML loading that remembers where every key and value came from.

PyYAML's constructors drop positions, so we compose the node graph ourselves and turn it
into plain dicts/lists (subclasses carrying positions). Scalars resolve like YAML 1.2's core
schema, not PyYAML's YAML 1.1 defaults: `21:00` stays the string "21:00" (1.1 reads it as
the base-60 integer 1260), `no`/`on` stay strings, and timestamps stay the text the user wrote.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from tidings.engine.journeys.language.issues import Issues, Pos


class LMap(dict):
    """A YAML mapping; `pos` is where it starts, `key_pos`/`value_pos` where each entry is."""

    def __init__(self, pos: Pos):
        super().__init__()
        self.pos = pos
        self.key_pos: dict[Any, Pos] = {}
        self.value_pos: dict[Any, Pos] = {}


class LList(list):
    """A YAML sequence; `item_pos[i]` is where item i starts."""

    def __init__(self, pos: Pos):
        super().__init__()
        self.pos = pos
        self.item_pos: list[Pos] = []


class _Resolver(BaseResolver):
    pass


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


# Hostile documents are refused while they are composed, before anything is built from them:
# - nesting: composing recurses, so a document nested a thousand levels exhausted the stack (a 500);
# - aliases: `*a` shares a node, but everything downstream (plain(), the JSON we store, the compiler) walks
#   the expanded tree, so ten nested anchors of ten aliases each ("billion laughs", 520 bytes) meant 10^10
#   nodes and 12.5 GB. The expanded size of every alias is counted as it is met.
MAX_DEPTH = 64  # a rule (at most 32 levels, tidings.engine.customers.limits) fits inside a deep journey
MAX_ALIAS_NODES = 10_000


class _Refused(yaml.MarkedYAMLError):
    """A document over one of the bounds above (not a syntax error)."""


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, _Resolver):
    def __init__(self, stream: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0
        self._alias_nodes = 0  # nodes reached through aliases in the current document, counted expanded
        self._sizes: dict[int, int] = {}

    def fetch_flow_collection_start(self, token_class):
        # The scanner looks ahead across open `[`/`{` before the composer sees them (quadratically: 2,000
        # of them took a second), so flow nesting is bounded here, where it is counted.
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(None, None, f"the document nests more than {MAX_DEPTH} levels deep",
                               self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_document(self):
        # Sizes are memoized by id(node), and a finished document's nodes are freed: a later document's node
        # can reuse an id and inherit a small size (an anchor of a billion values counted as one).
        self._alias_nodes, self._sizes = 0, {}
        return super().compose_document()

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            self._alias_nodes += _expanded_size(self.anchors[event.anchor], self._sizes)
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise _Refused(None, None, f"YAML aliases expand this document past {MAX_ALIAS_NODES:,} "
                                    "values; write the repeated part out (or repeat it less)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"the document nests more than {MAX_DEPTH} levels deep",
                                    event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` stands for once aliases are expanded (memoized: linear in the real nodes)."""
    key = id(node)
    if key not in sizes:
        sizes[key] = 1  # a node that contains itself counts once here; the converter reports it
        if isinstance(node, yaml.SequenceNode):
            sizes[key] = 1 + sum(_expanded_size(n, sizes) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            sizes[key] = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    return sizes[key]


def pos_of(mark: yaml.Mark) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


@dataclass
class Document:
    """One `---` document of a file: its located value and its own source text."""

    value: Any
    pos: Pos
    text: str


class _Converter:
    def __init__(self, loader: _Loader, issues: Issues):
        self.loader = loader
        self.issues = issues
        # Aliases point at the same node; converting it once keeps `&a`/`*a` cheap and
        # lets us spot a node that contains itself.
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def convert(self, node: yaml.Node) -> Any:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            self.issues.add(pos_of(node.start_mark), "a YAML alias refers to the node that contains it")
            return None
        self.active.add(key)
        try:
            value = self._convert(node)
        finally:
            self.active.discard(key)
        self.done[key] = value
        return value

    def _convert(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.issues.add(pos_of(node.start_mark), f"cannot read value: {getattr(exc, 'problem', exc)}")
                return None
            except (ValueError, TypeError, AttributeError, OverflowError) as exc:
                # the constructors' own limits: `!!timestamp 99999-01-01`, a 5,000-digit integer
                self.issues.add(pos_of(node.start_mark), f"cannot read value {node.value[:40]!r}: {exc}")
                return None
        if isinstance(node, yaml.SequenceNode):
            out = LList(pos_of(node.start_mark))
            for item in node.value:
                out.append(self.convert(item))
                out.item_pos.append(pos_of(item.start_mark))
            return out
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node)
        raise TypeError(node)  # pragma: no cover - the composer only makes the three kinds

    def _mapping(self, node: yaml.MappingNode) -> LMap:
        out = LMap(pos_of(node.start_mark))
        for key_node, value_node in node.value:
            kpos = pos_of(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.add(kpos, "mapping keys must be plain strings")
                continue
            key = self.convert(key_node)
            if not isinstance(key, str):
                key = key_node.value  # `1: x` or `true: x` -> keep the text the user typed
            if key in out:
                first = out.key_pos[key]
                self.issues.add(kpos, f"duplicate key `{key}` (first given on line {first.line})")
                continue
            out[key] = self.convert(value_node)
            out.key_pos[key] = kpos
            out.value_pos[key] = pos_of(value_node.start_mark)
        return out


def load_documents(text: str, issues: Issues) -> list[Document]:
    """Every document of `text`, located. YAML syntax errors go to `issues` (and stop the file)."""
    docs: list[Document] = []
    loader = None
    try:
        loader = _Loader(text)  # checks every character first (a NUL is refused here)
        while loader.check_node():
            node = loader.get_node()
            doc_text = text[node.start_mark.index:node.end_mark.index]
            docs.append(Document(_Converter(loader, issues).convert(node), pos_of(node.start_mark), doc_text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or str(exc)
        if exc.context:
            message = f"{exc.context}: {message}"
        if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            # an unclosed `[`/`{`/quote is only noticed later; point back to where it opened
            message += f" (opened on line {exc.context_mark.line + 1})"
        prefix = "" if isinstance(exc, _Refused) else "YAML syntax error: "
        issues.add(pos_of(mark) if mark else None, prefix + message)
    except yaml.YAMLError as exc:  # reader errors (bad bytes) carry no problem_mark
        issues.add(None, f"YAML error: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    if len(docs) == 1:
        docs[0].text = text  # a one-document file hashes as the whole file, comments included
    return docs


def plain(value: Any) -> Any:
    """Drop positions: LMap/LList become dict/list (what JsonLogic engines and the IR want)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
