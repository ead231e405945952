"""Channels. The plugin contract lives in engine.channels.contract; this package re-exports it,
so third-party plugins keep writing `from engine.channels import Channel, SendResult, ...`."""
from engine.channels.contract import *  # noqa: F401,F403
from engine.channels.contract import __all__  # noqa: F401
