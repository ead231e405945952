# The journey runtime fixtures (the session's Temporal dev server, a database, an in-process worker).
from tests.journeys.conftest import dev_worker, runtime_db, temporal_dev  # noqa: F401
