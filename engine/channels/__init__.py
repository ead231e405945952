"""Channels. The plugin contract lives in tidings.engine.channels.contract; this package re-exports it,
so third-party plugins keep writing `from tidings.engine.channels import Channel, SendResult, ...`."""
from tidings.engine.channels.contract import *  # noqa: F401,F403
from tidings.engine.channels.contract import __all__  # noqa: F401
