from tests.ingest.conftest import fleet, ingest, prefix, publisher  # noqa: F401 (shared fixtures)
