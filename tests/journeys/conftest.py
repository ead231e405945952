# Users enable these with `pytest_plugins = ["engine.journeys.testing"]` in their top-level conftest.py;
# pytest allows that only at the top level, so this sub-folder imports the fixtures instead.
from engine.journeys.testing import journey_env, journey_test  # noqa: F401
