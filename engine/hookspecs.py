"""Public alias of tidings.engine.channels.hookspecs (third-party plugins import `hookimpl` from here)."""
from tidings.engine.channels.hookspecs import *  # noqa: F401,F403
from tidings.engine.channels.hookspecs import hookimpl, hookspec  # noqa: F401
