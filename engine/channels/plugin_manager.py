"""Plugin manager: discovers channel plugins and indexes what they provide.

Plugins are found through the ``tidings`` entry-point group (see
``docs/writing-a-channel-plugin.md``). The built-in channels of this
distribution are declared in its own ``pyproject.toml`` under
``[project.entry-points.tidings]`` and so load through the very same path as
third-party plugins.

Start-up fails (:class:`PluginError`) when a plugin cannot be imported, when a
hook implementation does not match a spec, when a channel is malformed, or
when two plugins provide the same channel name / event-sink kind: the error
names both sources.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import logging
import re
import types
from collections.abc import Iterable
from typing import Any

import msgspec
import pluggy

from tidings.engine.channels import hookspecs
from tidings.engine.channels.contract import Channel, ChannelType, EventSinkFactory
from tidings.engine.platform.config import Settings

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "PluginError",
    "LoadedPlugin",
    "TidingsPluginManager",
    "get_plugin_manager",
    "describe_plugins",
]

ENTRY_POINT_GROUP = "tidings"
BUILTIN_DISTRIBUTION = "tidings"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


log = logging.getLogger("tidings.plugins")

class PluginError(RuntimeError):
    """Start-up error of the plugin system (import, conflict, malformed plugin)."""


class LoadedPlugin(msgspec.Struct, kw_only=True):
    name: str  # entry-point name (or module name for extra modules)
    module: str  # the object the entry point refers to
    source: str  # "builtin" or "<distribution> <version>" or "module <name>"
    channels: list[str] = []
    event_sinks: list[str] = []


class TidingsPluginManager:
    """Loaded plugins plus indexes of their channels and event-sink factories."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.plugins: dict[str, LoadedPlugin] = {}  # pluggy name -> info
        self.channels: dict[str, Channel] = {}
        self.channel_sources: dict[str, str] = {}
        self.event_sink_factories: dict[str, EventSinkFactory] = {}
        self.event_sink_sources: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------
    async def startup(self, settings: Settings) -> None:
        """Each plugin's `startup` hook, in plugin order; one that raises stops start-up, named."""
        for impl, result in self._each("startup", settings=settings):
            try:
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise PluginError(f"plugin {impl.plugin_name!r}: startup failed: {exc}") from exc

    async def shutdown(self, settings: Settings) -> None:
        """Each plugin's `shutdown` hook; one that raises is logged and the others still run."""
        for impl, result in self._each("shutdown", settings=settings, keep_going=True):
            try:
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r: shutdown failed", impl.plugin_name)

    def _each(self, hook: str, *, keep_going: bool = False, **kwargs: Any) -> Iterable[tuple[Any, Any]]:
        # one call per implementation (not pluggy's all-at-once) so a failure names its plugin
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                yield impl, impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                if not keep_going:
                    raise PluginError(f"plugin {impl.plugin_name!r}: {hook} failed: {exc}") from exc
                log.exception("plugin %r: %s failed", impl.plugin_name, hook)

    # -- queries -----------------------------------------------------------
    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels)) or "none"
            raise KeyError(f"unknown channel {name!r} (loaded: {known})") from None

    def channels_of_type(self, channel_type: ChannelType | str) -> list[Channel]:
        ct = ChannelType(channel_type)
        return [c for c in self.channels.values() if c.channel_type == ct]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "module": p.module,
                "source": p.source,
                "channels": list(p.channels),
                "event_sinks": list(p.event_sinks),
            }
            for p in self.plugins.values()
        ]

    # -- loading -----------------------------------------------------------
    def _register(self, plugin: Any, *, name: str, module: str, source: str) -> None:
        key = f"{source}:{name}"
        for existing_key in self.plugins:
            if self.pm.get_plugin(existing_key) is plugin:
                return  # same object reached twice (e.g. entry point + extra module)
        try:
            self.pm.register(plugin, name=key)
        except ValueError as exc:  # pluggy: hookimpl validation or duplicate name
            raise PluginError(f"cannot register plugin {name!r} from {source}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid plugin {name!r} from {source}: {exc}") from exc
        self.plugins[key] = LoadedPlugin(name=name, module=module, source=source)

    def _collect(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin implements an unknown hook: {exc}") from exc
        for impl in self.pm.hook.register_channels.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            for ch in _call(impl, info):
                _check_channel(ch, info)
                if ch.name in self.channels:
                    raise PluginError(
                        f"duplicate channel name {ch.name!r}: provided by "
                        f"{self.channel_sources[ch.name]} and by {_where(info)}"
                    )
                self.channels[ch.name] = ch
                self.channel_sources[ch.name] = _where(info)
                info.channels.append(ch.name)
        for impl in self.pm.hook.register_event_sinks.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            for f in _call(impl, info):
                kind = getattr(f, "kind", None)
                if not isinstance(kind, str) or not _NAME_RE.match(kind) or not callable(f):
                    raise PluginError(f"invalid event-sink factory {f!r} from {_where(info)}")
                if kind in self.event_sink_factories:
                    raise PluginError(
                        f"duplicate event-sink kind {kind!r}: provided by "
                        f"{self.event_sink_sources[kind]} and by {_where(info)}"
                    )
                self.event_sink_factories[kind] = f
                self.event_sink_sources[kind] = _where(info)
                info.event_sinks.append(kind)


def _where(info: LoadedPlugin) -> str:
    return f"plugin {info.name!r} ({info.source}, {info.module})"


def _call(impl: Any, info: LoadedPlugin) -> list[Any]:
    try:
        result = impl.function()
    except Exception as exc:
        raise PluginError(
            f"hook {impl.function.__name__} of {_where(info)} raised {type(exc).__name__}: {exc}"
        ) from exc
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise PluginError(
            f"hook {impl.function.__name__} of {_where(info)} must return a list, "
            f"got {type(result).__name__}"
        )
    return list(result)


def _check_channel(ch: Any, info: LoadedPlugin) -> None:
    where = _where(info)
    name = getattr(ch, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(
            f"channel {ch!r} from {where} has an invalid name {name!r} "
            "(expected lowercase letters, digits, '.', '_' or '-')"
        )
    if not isinstance(getattr(ch, "channel_type", None), ChannelType):
        raise PluginError(f"channel {name!r} from {where}: channel_type must be a ChannelType")
    if not inspect.iscoroutinefunction(getattr(ch, "send_batch", None)):
        raise PluginError(f"channel {name!r} from {where}: send_batch must be an async method")
    if not isinstance(getattr(ch, "config_fields", ()), (tuple, list)):
        raise PluginError(f"channel {name!r} from {where}: config_fields must be a tuple")
    pf = getattr(ch, "parse_feedback", None)
    if pf is not None and not callable(pf):
        raise PluginError(f"channel {name!r} from {where}: parse_feedback must be callable")


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=ENTRY_POINT_GROUP)
    # Deterministic order: built-ins first, then by distribution and name.
    def key(ep: md.EntryPoint) -> tuple[int, str, str]:
        dist = ep.dist.name if ep.dist is not None else ""
        return (0 if _is_builtin_dist(dist) else 1, dist.lower(), ep.name)

    return sorted(eps, key=key)


def _is_builtin_dist(name: str | None) -> bool:
    return (name or "").replace("_", "-").lower() == BUILTIN_DISTRIBUTION


def get_plugin_manager(
    extra_modules: Iterable[str | types.ModuleType | object] = (),
    *,
    entry_points: bool = True,
    builtins: bool = True,
) -> TidingsPluginManager:
    """Build the plugin manager: load plugins, validate, index channels.

    * ``entry_points``: load everything in the ``tidings`` entry-point group
      (built-ins and installed third-party plugins).
    * ``builtins``: when false, skip entry points of the ``tidings``
      distribution itself (and the temporary fallback list).
    * ``extra_modules``: more plugins (module objects, importable module
      names or any object with hookimpls), reported with source
      ``"module <name>"``; meant for tests and embedding.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    tpm = TidingsPluginManager(pm)

    if entry_points:
        for ep in _entry_points():
            dist_name = ep.dist.name if ep.dist is not None else None
            if _is_builtin_dist(dist_name):
                if not builtins:
                    continue
                source = "builtin"
            else:
                version = ep.dist.version if ep.dist is not None else "?"
                source = f"{dist_name or 'unknown distribution'} {version}"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"cannot load plugin {ep.name!r} ({ep.value}) from {source}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            tpm._register(plugin, name=ep.name, module=ep.value, source=source)

    for extra in extra_modules:
        if isinstance(extra, str):
            try:
                plugin = importlib.import_module(extra)
            except Exception as exc:
                raise PluginError(f"cannot import plugin module {extra!r}: {exc}") from exc
            modname = extra
        else:
            plugin = extra
            modname = getattr(extra, "__name__", None) or type(extra).__qualname__
        tpm._register(plugin, name=modname, module=modname, source=f"module {modname}")

    tpm._collect()
    return tpm


def describe_plugins(manager: TidingsPluginManager | None = None) -> list[dict[str, Any]]:
    """What ``tidings plugins`` prints: one dict per loaded plugin.

    Keys: ``name`` (entry-point name), ``channels`` (channel names),
    ``event_sinks`` (kinds), ``module`` and ``source`` (``"builtin"`` or
    ``"<distribution> <version>"``).
    """
    return (manager or get_plugin_manager()).describe()
