"""Public alias of engine.channels.hookspecs (third-party plugins import `hookimpl` from here)."""
from engine.channels.hookspecs import *  # noqa: F401,F403
from engine.channels.hookspecs import hookimpl, hookspec  # noqa: F401
