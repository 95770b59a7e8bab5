"""schemathesis against the OpenAPI schema, over a seeded database.

Every documented operation gets generated requests (valid and invalid); none may answer
5xx, and every answer must conform to the schema (status code, content type, headers,
body). `positive_data_acceptance` is left out on purpose: some limits span parameters
(a range longer than 31 days of raw readings) and cannot be written in OpenAPI, so a
schema-valid request may rightly get a 400.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from models.settings import Settings
from tests.api.conftest import Fleet

# The schema needs no database: take it from an app built with default settings. Requests
# go to the test's own app (seeded database), passed to each call.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
schema.app = create_app(Settings())


@pytest.fixture
def seeded_app(settings: Settings, fleet: Fleet) -> FastAPI:
    return create_app(settings)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_requests_get_no_server_error_and_conform_to_the_schema(
    case: schemathesis.Case, seeded_app: FastAPI
) -> None:
    case.call_and_validate(app=seeded_app, excluded_checks=[positive_data_acceptance])
