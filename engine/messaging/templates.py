"""Message templates: storage shape, validation at save time, rendering at send time.

Templates are Jinja2 rendered in an immutable sandbox. HTML parts (email
``html``) are auto-escaped; every other part is plain text and not escaped.
A missing variable renders as its default from ``Template.defaults`` or as an
empty string (attribute access on a missing value is also empty), never an
error. See ``docs/templates.md`` for the user-facing description, including
the Pinpoint-compatible variable names.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import re
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from jinja2 import ChainableUndefined, Environment, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tidings.engine.channels.contract import ChannelType
from tidings.engine.customers.limits import MAX_DEPTH, too_deep

__all__ = [
    "TemplateParts",
    "Template",
    "RenderedContent",
    "TemplateError",
    "TemplateRenderError",
    "AttributeValues",
    "PARTS_BY_CHANNEL",
    "validate_template",
    "template_errors",
    "render",
    "build_context",
    "locale_candidates",
]

MAX_PART_LENGTH = 256 * 1024


class TemplateParts(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Template sources; which are used depends on the channel type.

    EMAIL: subject, html, text. SMS: body. VOICE: text.
    PUSH: title, body, data (each value of ``data`` is a template).
    WEBHOOK / CUSTOM: body, data.
    """

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    body: str | None = None
    title: str | None = None
    data: dict[str, str] = {}


class Template(msgspec.Struct, kw_only=True):
    """A stored template.

    ``defaults`` maps a variable path (``"User.UserAttributes.FirstName"``,
    ``"user.attributes.plan"``, ``"data.code"``) to the value used when the
    variable is missing or empty (Pinpoint's ``DefaultSubstitutions``).
    ``locales`` maps a locale (``"fr"``, ``"fr-CA"``) to parts overriding the
    base parts, part by part.
    """

    id: str
    channel_type: ChannelType
    parts: TemplateParts
    defaults: dict[str, Any] = {}
    locales: dict[str, TemplateParts] = {}


class RenderedContent(TemplateParts, kw_only=True, omit_defaults=True):
    """Rendered parts, ready to copy into an OutgoingMessage.

    ``locale`` is the locale variant used (``None`` for the base parts).
    """

    locale: str | None = None


class TemplateError(Exception):
    """A template cannot be saved: ``part`` (e.g. ``"html"``, ``"data.url"``,
    ``"locales.fr.subject"``), ``line`` (1-based, or None) and ``message``."""

    def __init__(self, part: str, line: int | None, message: str) -> None:
        self.part, self.line, self.message = part, line, message
        where = f"{part}, line {line}" if line else part
        super().__init__(f"{where}: {message}")


class TemplateRenderError(Exception):
    """Rendering failed at send time; record a rendering-failure event."""

    def __init__(self, part: str, message: str, template_id: str | None = None) -> None:
        self.part, self.message, self.template_id = part, message, template_id
        super().__init__(f"template {template_id!r}, part {part}: {message}")


# The text parts of a message, in rendering order (OutgoingMessage carries the same names; `data` is per key).
TEXT_PARTS = ("subject", "html", "text", "body", "title")
PARTS_BY_CHANNEL: dict[ChannelType, tuple[str, ...]] = {
    ChannelType.EMAIL: ("subject", "html", "text"),
    ChannelType.SMS: ("body",),
    ChannelType.VOICE: ("text",),
    ChannelType.PUSH: ("title", "body", "data"),
    ChannelType.WEBHOOK: ("body", "data"),
    ChannelType.CUSTOM: ("body", "data"),
}


# --------------------------------------------------------------------------
# Jinja environment
# --------------------------------------------------------------------------


class _Undefined(ChainableUndefined):
    """Missing values render empty and chain; sandbox violations raise."""

    __slots__ = ()

    def _is_security(self) -> bool:
        return isinstance(self._undefined_exception, type) and issubclass(
            self._undefined_exception, SecurityError
        )

    def __str__(self) -> str:
        if self._is_security():
            self._fail_with_undefined_error()
        return ""

    def __html__(self) -> str:
        return str(self)

    def __iter__(self):  # type: ignore[override]
        if self._is_security():
            self._fail_with_undefined_error()
        return iter(())

    def __bool__(self) -> bool:
        if self._is_security():
            self._fail_with_undefined_error()
        return False


def _finalize(value: Any) -> Any:
    return "" if value is None else value


# --------------------------------------------------------------------------
# Budgets: what one render may cost
# --------------------------------------------------------------------------
# Jinja's sandbox stops a template from reaching Python, not from spending: `{{ "x" * 50000000 }}` was
# folded at compile time into a 50 MB constant (kept by the compiled-template cache), and two nested
# 10,000-item loops rendered for seconds. Every render here has a size cap (each part, and any value a
# template builds) and a time cap, checked as it runs: by the operators and calls the sandbox intercepts,
# by every loop iteration and by every joined output. Values come from the environment of the process
# that renders (the API for transactional sends, the worker for journeys).
MAX_RENDERED_CHARS = int(os.environ.get("TIDINGS_TEMPLATE_MAX_CHARS", str(1_000_000)))
MAX_RENDER_SECONDS = float(os.environ.get("TIDINGS_TEMPLATE_MAX_SECONDS", "2"))
# The compiled-template cache is bounded by the source characters it holds (compiled code is a few times
# larger), not only by its number of entries.
CACHE_CHARS = int(os.environ.get("TIDINGS_TEMPLATE_CACHE_CHARS", str(8_000_000)))
CACHE_ENTRIES = 2048


class TemplateBudgetError(Exception):
    """A render went past MAX_RENDERED_CHARS or MAX_RENDER_SECONDS."""


class _Budget(threading.local):
    deadline = math.inf  # no render in progress on this thread: nothing to time


_budget = _Budget()


def _tick() -> None:
    if time.monotonic() > _budget.deadline:
        raise TemplateBudgetError(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")


def _too_big(size: int) -> None:
    if size > MAX_RENDERED_CHARS:
        raise TemplateBudgetError(f"the template builds a value of more than {MAX_RENDERED_CHARS:,} characters")


def _sized(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict)):
        _too_big(len(value))
    return value


def _budgeted_concat(chunks) -> str:
    """Environment.concat: every output (a part, a macro's body, a `{% set %}` block) is joined here."""
    out: list[str] = []
    size = 0
    for n, chunk in enumerate(chunks):
        size += len(chunk)
        _too_big(size)
        if not n & 63:
            _tick()
        out.append(chunk)
    return "".join(out)


def _loop_items(iterable):
    """Wrapped around every `{% for %}` iterable (see _BudgetedEnv._parse): loops tick the clock."""
    for n, item in enumerate(iterable):
        if not n & 255:
            _tick()
        yield item


_FORMAT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(template: Any) -> None:
    """`"%99999999d" % 1` (or `|format`) would allocate the width before anything can measure it."""
    if isinstance(template, str):
        for width, precision in _FORMAT_WIDTH.findall(template):
            for n in (width, precision):
                if n == "*" or (n and int(n) > MAX_RENDERED_CHARS):
                    raise TemplateBudgetError("a % format width is too large (or given with *)")


def _check_brace_format(template: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(template):
        if spec and ("{" in spec or any(int(n) > MAX_RENDERED_CHARS for n in re.findall(r"\d+", spec))):
            raise TemplateBudgetError("a format width is too large (or computed)")


_WIDTH_TAKERS = frozenset({"center", "ljust", "rjust", "zfill", "indent", "wordwrap"})


def _check_int_args(args: tuple, kwargs: dict) -> None:
    """Widths (center(10**9), indent(10**9)) may not exceed the size cap: they allocate before any check."""
    for a in (*args, *kwargs.values()):
        if a.__class__ is int and abs(a) > MAX_RENDERED_CHARS:
            raise TemplateBudgetError(f"a number argument larger than {MAX_RENDERED_CHARS:,} is refused")


def _check_replace(value: Any, old: Any, new: Any) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        _too_big(len(value) + (value.count(old) if old else len(value) + 1) * (len(new) - len(old)))


def _check_join(items: Any, sep: Any) -> Any:
    if isinstance(items, (list, tuple)):
        _too_big(sum(len(x) for x in items if isinstance(x, str)) + len(str(sep)) * len(items))
    return items


def _budgeted_filter(name: str, f: Callable) -> Callable:
    """A built-in filter behind the same checks as calls (filters are not routed through Environment.call)."""

    @functools.wraps(f)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        _tick()
        plain_args = [a for a in args if not isinstance(a, (EvalContext, Context, Environment))]
        if name in _WIDTH_TAKERS:
            _check_int_args(tuple(plain_args[1:]), kwargs)
        if name == "replace" and len(plain_args) >= 3:
            _check_replace(*plain_args[:3])
        elif name == "join" and plain_args:
            _check_join(list(plain_args[0]) if not isinstance(plain_args[0], (str, list, tuple)) else plain_args[0],
                        plain_args[1] if len(plain_args) > 1 else kwargs.get("d", ""))
        elif name == "format" and plain_args:
            _check_percent_format(plain_args[0])
        elif name in ("indent", "wordwrap") and plain_args and isinstance(plain_args[0], str):
            extra = [a for a in (*plain_args[1:], *kwargs.values()) if isinstance(a, str)]
            _too_big(len(plain_args[0]) + (plain_args[0].count("\n") + len(plain_args[0]) // 8 + 1)
                     * sum(len(a) for a in extra))
        return _sized(f(*args, **kwargs))

    return filter_


class _BudgetedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        # `{% set a = a ~ a %}` thirty times doubles a string to gigabytes without any call the sandbox sees.
        self.write("environment.sized(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BudgetedEnv(ImmutableSandboxedEnvironment):
    # Intercepted operators are also never folded into constants at compile time.
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})
    code_generator_class = _BudgetedCodeGenerator
    concat = staticmethod(_budgeted_concat)
    sized = staticmethod(_sized)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and n.__class__ is int:
                    _too_big(len(seq) * n)
        elif operator == "**" and left.__class__ is int and right.__class__ is int and right > 0:
            if abs(left) > 1 and abs(left).bit_length() * right > 64 * 1024:
                raise TemplateBudgetError("a power this large is refused")
        elif operator == "%":
            _check_percent_format(left)
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the sandbox's own signature
        _tick()
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            if name in _WIDTH_TAKERS:
                _check_int_args(args, kwargs)
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name == "join" and args:
                args = (_check_join(list(args[0]), owner), *args[1:])
            elif name in ("translate", "expandtabs"):
                raise TemplateBudgetError(f"str.{name} is not available in templates")
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_brace_format(value.__self__)
        return wrapped

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "tidings_loop", [], [], None, None, lineno=loop.lineno)
        return tree


def _make_env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _BudgetedEnv(
        autoescape=autoescape,
        undefined=_Undefined,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters = {name: _budgeted_filter(name, f) for name, f in env.filters.items()}
    env.filters["tidings_loop"] = _loop_items
    env.globals.pop("lipsum", None)  # placeholder text has no place in a message, and n=10**9 is a lot
    return env


_TEXT_ENV = _make_env(False)
_HTML_ENV = _make_env(True)


class _CompiledCache:
    """Compiled templates by (source, html), least recently used first out, bounded by entries and by
    the source characters held (templates are up to MAX_PART_LENGTH each)."""

    def __init__(self, max_chars: int, max_entries: int) -> None:
        self.max_chars, self.max_entries = max_chars, max_entries
        self.items: OrderedDict[tuple[str, bool], Any] = OrderedDict()
        self.chars = 0
        self.lock = threading.Lock()

    def get(self, source: str, html: bool):
        key = (source, html)
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
                return hit
        compiled = (_HTML_ENV if html else _TEXT_ENV).from_string(source)
        with self.lock:
            if key not in self.items:
                self.items[key] = compiled
                self.chars += len(source)
            while self.items and (self.chars > self.max_chars or len(self.items) > self.max_entries):
                (old, _), _ = self.items.popitem(last=False)
                self.chars -= len(old)
        return compiled

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.chars = 0


_CACHE = _CompiledCache(CACHE_CHARS, CACHE_ENTRIES)


def _compile(source: str, html: bool):
    return _CACHE.get(source, html)


@functools.lru_cache(maxsize=4096)
def _may_run_long(source: str) -> bool:
    """Loops and macros are what can make a render take long; a template without them runs each of its
    (bounded) operations once."""
    try:
        tree = _TEXT_ENV.parse(source)
    except Exception:
        return True
    return any(tree.find(kind) is not None for kind in (nodes.For, nodes.Macro, nodes.CallBlock))


def renders_quickly(t: "Template | None") -> bool:
    """Whether `t` may be rendered on an event loop: no part loops or defines macros."""
    if t is None:
        return True
    return not any(_may_run_long(src) for _, _, src, _ in _iter_sources(t) if isinstance(src, str))


@contextlib.contextmanager
def _render_budget():
    outer = _budget.deadline
    _budget.deadline = min(outer, time.monotonic() + MAX_RENDER_SECONDS)
    try:
        yield
    finally:
        _budget.deadline = outer


class AttributeValues(list):
    """A Pinpoint attribute value (a list of strings).

    Renders as its values joined by ``", "`` (so a one-value list renders as
    that value); still indexable (``[0]``), iterable and usable with ``join``.
    """

    def __str__(self) -> str:
        return ", ".join("" if v is None else str(v) for v in self)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _iter_sources(t: Template):
    allowed = PARTS_BY_CHANNEL[t.channel_type]
    variants: list[tuple[str, TemplateParts]] = [("", t.parts)]
    variants += [(f"locales.{loc}.", p) for loc, p in t.locales.items()]
    for prefix, parts in variants:
        for name in TEXT_PARTS:
            src = getattr(parts, name)
            if src is None:
                continue
            if name not in allowed:
                yield prefix + name, None, src, f"part {name!r} is not used by {t.channel_type.value} templates"
                continue
            yield prefix + name, name == "html", src, None
        for key, src in parts.data.items():
            if "data" not in allowed:
                yield f"{prefix}data", None, src, f"part 'data' is not used by {t.channel_type.value} templates"
                break
            yield f"{prefix}data.{key}", False, src, None


def _forbidden_nodes(part: str, ast: nodes.Template, env: Any) -> list[TemplateError]:
    """What the sandbox refuses before rendering: includes and imports, private attributes, unknown
    filters and tests."""
    errors: list[TemplateError] = []
    for node in ast.find_all(
        (nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Test, nodes.Include, nodes.Extends,
         nodes.Import, nodes.FromImport)
    ):
        line = node.lineno
        if isinstance(node, (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
            errors.append(TemplateError(part, line, "include/extends/import are not allowed"))
        elif isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            errors.append(
                TemplateError(part, line, f"access to attribute {node.attr!r} is not allowed")
            )
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            errors.append(
                TemplateError(part, line, f"access to attribute {node.arg.value!r} is not allowed")
            )
        elif isinstance(node, nodes.Filter):
            if node.name not in env.filters:
                errors.append(TemplateError(part, line, f"unknown filter {node.name!r}"))
            elif node.name == "attr" and any(
                isinstance(a, nodes.Const) and str(a.value).startswith("_") for a in node.args
            ):
                errors.append(TemplateError(part, line, "access to private attributes is not allowed"))
        elif isinstance(node, nodes.Test) and node.name not in env.tests:
            errors.append(TemplateError(part, line, f"unknown test {node.name!r}"))
    return errors


def _check_source(part: str, source: str, html: bool) -> list[TemplateError]:
    if not isinstance(source, str):
        return [TemplateError(part, None, "must be a string")]
    if len(source) > MAX_PART_LENGTH:
        return [TemplateError(part, None, f"longer than {MAX_PART_LENGTH} characters")]
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        ast = env.parse(source)
    except RecursionError:
        return [TemplateError(part, None, "nested too deeply: expressions and blocks nest at most ~90 levels")]
    except TemplateSyntaxError as exc:
        msg = exc.message or str(exc)
        if "{{#" in source or "{{/" in source:
            msg += (
                " (Handlebars block helpers such as {{#if}} / {{#each}} are not supported;"
                " use {% if %} / {% for %})"
            )
        return [TemplateError(part, exc.lineno, msg)]
    errors = _forbidden_nodes(part, ast, env)
    if not errors:
        try:
            compiled = _compile(source, html)
        except TemplateSyntaxError as exc:
            return [TemplateError(part, exc.lineno, exc.message or str(exc))]
        except (RecursionError, SyntaxError, MemoryError):  # Python's own limits on the compiled code
            return [TemplateError(part, None, "nested too deeply: expressions and blocks nest at most ~90 levels")]
        errors += _trial_render(part, compiled)
    return errors


def _trial_render(part: str, compiled: Any) -> list[TemplateError]:
    """Render once for a recipient with no data, under the budgets: a template that is too big or too slow
    whatever the data (a loop of constants, a folded string) is refused when it is saved, naming the part.
    Other failures depend on data absent here and are left to the send."""
    try:
        with _render_budget():
            compiled.render(build_context({}))
    except TemplateBudgetError as exc:
        return [TemplateError(part, None, f"{exc} (even for a recipient with no data)")]
    except Exception:
        pass
    return []


def template_errors(t: Template) -> list[TemplateError]:
    """Every problem found in ``t`` (empty list when it can be saved)."""
    errors: list[TemplateError] = []
    for part, html, src, problem in _iter_sources(t):
        if problem:
            errors.append(TemplateError(part, None, problem))
        else:
            errors.extend(_check_source(part, src, bool(html)))
    p = t.parts
    ct = t.channel_type
    if ct == ChannelType.EMAIL:
        if not p.subject:
            errors.append(TemplateError("subject", None, "an email template needs a subject"))
        if p.html is None and p.text is None:
            errors.append(TemplateError("html", None, "an email template needs an html or text part"))
    elif ct == ChannelType.SMS and not p.body:
        errors.append(TemplateError("body", None, "an SMS template needs a body"))
    elif ct == ChannelType.VOICE and not p.text:
        errors.append(TemplateError("text", None, "a voice template needs a text"))
    elif ct == ChannelType.PUSH and not (p.title or p.body or p.data):
        errors.append(TemplateError("body", None, "a push template needs a title, body or data"))
    for loc in t.locales:
        if not _LOCALE_RE.match(loc):
            errors.append(TemplateError(f"locales.{loc}", None, f"invalid locale {loc!r}"))
    for path, value in t.defaults.items():
        if not isinstance(path, str) or not path or any(s == "" for s in path.split(".")):
            errors.append(TemplateError("defaults", None, f"invalid variable path {path!r}"))
        elif too_deep(value, MAX_DEPTH - 1) is not None:
            errors.append(TemplateError(f"defaults.{path}", None, f"nested more than {MAX_DEPTH} levels deep"))
    return errors


def validate_template(t: Template) -> None:
    """Raise the first :class:`TemplateError` of ``t``; call before saving."""
    errors = template_errors(t)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------

# Pinpoint scalar aliases -> canonical paths (container aliases share objects).
_SCALAR_ALIASES = {
    "User.UserId": "user.user_id",
    "Address": "endpoint.address",
    "Id": "endpoint.id",
    "ChannelType": "endpoint.channel",
}
_SCALAR_ALIASES.update({v: k for k, v in list(_SCALAR_ALIASES.items())})


def _attrs(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    return {k: AttributeValues(v) if isinstance(v, (list, tuple)) else v for k, v in value.items()}


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def build_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """Template variables from ``{"user": ..., "endpoint": ..., "data": ...}``.

    Adds the Pinpoint-style names. Never mutates the input.
    """
    context = context or {}
    user = _dict(context.get("user"))
    endpoint = _dict(context.get("endpoint"))
    data = copy.deepcopy(_dict(context.get("data")))
    user["attributes"] = _attrs(user.get("attributes"))
    user["metrics"] = _dict(user.get("metrics"))
    endpoint["attributes"] = _attrs(endpoint.get("attributes"))
    endpoint["metrics"] = _dict(endpoint.get("metrics"))
    endpoint["demographic"] = _dict(endpoint.get("demographic"))
    endpoint["location"] = _dict(endpoint.get("location"))
    channel = endpoint.get("channel")
    if isinstance(channel, ChannelType):
        endpoint["channel"] = channel.value
    return {
        "user": user,
        "customer": user,  # the name journeys use in conditions (customer.attributes.plan)
        "endpoint": endpoint,
        "data": data,
        # Pinpoint aliases
        "User": {"UserId": user.get("user_id"), "UserAttributes": user["attributes"]},
        "Attributes": endpoint["attributes"],
        "Metrics": endpoint["metrics"],
        "Demographic": endpoint["demographic"],
        "Location": endpoint["location"],
        "Address": endpoint.get("address"),
        "Id": endpoint.get("id"),
        "ChannelType": endpoint.get("channel"),
    }


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple)) and len(value) == 0)


def _apply_default(ctx: dict[str, Any], path: str, value: Any) -> None:
    segments = path.split(".")
    node: Any = ctx
    for seg in segments[:-1]:
        child = node.get(seg) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            if child is not None and not isinstance(child, dict):
                return  # a non-dict value sits on the path: leave it alone
            child = {}
            node[seg] = child
        node = child
    if isinstance(node, dict) and _missing(node.get(segments[-1])):
        node[segments[-1]] = value


def _with_defaults(ctx: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    for path, value in defaults.items():
        _apply_default(ctx, path, value)
        alias = _SCALAR_ALIASES.get(path)
        if alias:
            _apply_default(ctx, alias, value)
    return ctx


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _norm_locale(loc: str) -> str:
    return loc.replace("_", "-").lower()


def locale_candidates(t: Template, locale: str | None) -> list[str]:
    """Keys of ``t.locales`` to try for ``locale``, most specific first
    (exact ``fr-CA``, then language ``fr``); the base parts come after."""
    if not locale:
        return []
    by_norm = {_norm_locale(k): k for k in t.locales}
    want = _norm_locale(locale)
    out = []
    if want in by_norm:
        out.append(by_norm[want])
    lang = want.split("-")[0]
    if lang != want and lang in by_norm:
        out.append(by_norm[lang])
    return out


def render(
    t: Template, context: Mapping[str, Any] | None, locale: str | None = None
) -> RenderedContent:
    """Render every part of ``t`` for one recipient.

    ``context`` is ``{"user": {...}, "endpoint": {...}, "data": {...}}``.
    ``locale`` defaults to ``context["user"]["locale"]``. Each part comes from
    the most specific locale variant defining it (``fr-CA`` -> ``fr`` ->
    base). Raises :class:`TemplateRenderError` (never anything else).
    """
    with _render_budget():
        return _render(t, context, locale)


def _render_part(t: Template, ctx: Mapping[str, Any], part: str, source: str, html: bool) -> str:
    try:
        return _compile(source, html).render(ctx)
    except SecurityError as exc:
        raise TemplateRenderError(part, f"forbidden by the sandbox: {exc}", t.id) from exc
    except TemplateBudgetError as exc:
        raise TemplateRenderError(part, str(exc), t.id) from exc
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(part, f"line {exc.lineno}: {exc.message}", t.id) from exc
    except Exception as exc:
        raise TemplateRenderError(part, f"{type(exc).__name__}: {exc}", t.id) from exc


def _data_sources(variants: list[tuple[str | None, Any]], used: set[str]) -> dict[str, str]:
    """The `data` fields of the base parts, each overridden by the most specific locale that has it
    (those locales added to `used`)."""
    data_sources: dict[str, str] = {}
    for loc, parts in reversed(variants):  # base first, specific overrides
        if parts.data:
            if loc is not None:
                used.add(loc)
            data_sources.update(parts.data)
    return data_sources


def _render(t: Template, context: Mapping[str, Any] | None, locale: str | None) -> RenderedContent:
    try:
        ctx = _with_defaults(build_context(context), t.defaults)
    except Exception as exc:  # malformed context
        raise TemplateRenderError("context", f"{type(exc).__name__}: {exc}", t.id) from exc
    if locale is None:
        locale = ctx["user"].get("locale") if isinstance(ctx["user"].get("locale"), str) else None
    candidates = locale_candidates(t, locale)
    variants = [(loc, t.locales[loc]) for loc in candidates] + [(None, t.parts)]

    used: set[str] = set()
    out: dict[str, Any] = {}

    def pick(name: str) -> str | None:
        for loc, parts in variants:
            src = getattr(parts, name)
            if src is not None:
                if loc is not None:
                    used.add(loc)
                return src
        return None

    def run(part: str, source: str, html: bool) -> str:
        return _render_part(t, ctx, part, source, html)

    allowed = PARTS_BY_CHANNEL[t.channel_type]
    for name in TEXT_PARTS:
        if name not in allowed:
            continue
        src = pick(name)
        if src is None:
            continue
        value = run(name, src, html=(name == "html"))
        if name == "subject":
            value = " ".join(value.split())  # no CR/LF in a header
        out[name] = value
    if "data" in allowed:
        data_sources = _data_sources(variants, used)
        if data_sources:
            out["data"] = {k: run(f"data.{k}", src, False) for k, src in data_sources.items()}
    used_locale = next((loc for loc in candidates if loc in used), None)
    return RenderedContent(**out, locale=used_locale)
