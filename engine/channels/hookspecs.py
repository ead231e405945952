"""Hook specifications of the ``tidings`` plugin system (pluggy).

A plugin is any module or object with functions marked ``@hookimpl`` whose
names match the specs below. Plugins are discovered through the ``tidings``
entry-point group; the built-in channels are registered the same way.

The ``register_*`` hooks are called **once per plugin at start-up** by
:func:`tidings.engine.channels.plugin_manager.get_plugin_manager`, with no arguments; the results of
all plugins are collected (none of them is ``firstresult``). They must be
fast and free of I/O: connections are made later, per send.

``startup`` and ``shutdown`` are the process's lifecycle (as in datasette): a plugin that holds
resources (a connection pool) opens or closes them there. An implementation takes any subset of the
arguments, by name, and may be ``async``.
"""

from __future__ import annotations

from collections.abc import Awaitable

import pluggy

from tidings.engine.channels.contract import Channel, EventSinkFactory
from tidings.engine.platform.config import Settings

PROJECT_NAME = "tidings"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_channels() -> list[Channel]:
    """Return the channel objects this plugin provides.

    Called once per plugin at start-up; the lists of all plugins are
    collected (not ``firstresult``). Each object must have a ``name`` unique
    across all loaded plugins (a duplicate makes start-up fail with an error
    naming both plugins), a ``channel_type`` (:class:`tidings.engine.channels.contract.ChannelType`),
    ``config_fields`` and ``async send_batch(messages, config)``; see
    :class:`tidings.engine.channels.contract.Channel`. Return an empty list to provide none.
    """


@hookspec
def register_event_sinks() -> list[EventSinkFactory]:
    """Return the event-sink factories this plugin provides.

    Called once per plugin at start-up; the lists of all plugins are
    collected (not ``firstresult``). Each factory has a ``kind`` unique
    across plugins (duplicates fail start-up), ``config_fields``, and is
    called as ``factory(name, config)`` (or ``factory(name, config, workspace=ws)``
    when its call takes a ``workspace`` keyword: the stream's
    :class:`tidings.engine.workspaces.service.WorkspaceRef`, for sinks that must keep
    workspaces apart) to build an
    :class:`tidings.engine.channels.contract.EventSink` whose ``async deliver(records)``
    receives batches of event records.
    """


@hookspec
def startup(settings: Settings) -> Awaitable[None] | None:
    """Called once per plugin when an API process (``tidings api``, ``tidings dev``) has loaded its
    plugins and before it serves a request, and when a worker (``tidings worker``) has loaded them and
    before it polls for sends; the results of all plugins are collected and each awaitable
    among them is awaited, in plugin order. ``settings`` is the process's
    :class:`tidings.engine.platform.config.Settings` (database URL, home folder, timeouts). An exception stops
    start-up, naming the plugin.
    """


@hookspec
def shutdown(settings: Settings) -> Awaitable[None] | None:
    """Called once per plugin when an API process stops (SIGTERM, Ctrl-C), after requests and import
    jobs have drained and before the database is closed, and when a worker stops, after its sends in flight
    have finished; the results of all plugins are collected and
    each awaitable among them is awaited, on the process's event loop (close pooled connections here).
    ``settings`` is the same :class:`tidings.engine.platform.config.Settings` ``startup`` received. An exception
    is logged and the other plugins still shut down.
    """
