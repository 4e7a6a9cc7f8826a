"""Property-based API test: Schemathesis against the app's own OpenAPI schema.

Generated requests (valid and invalid) must never get a 5xx, and every response
must conform to the schema (documented status code, content type, body). The
run is bounded (few examples per operation) so it takes seconds.
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.settings import Settings

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training

MAX_EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, trained_registry, api_key, running_server):
    from serving.app import create_app

    with trained_registry.active() as registry:
        app_settings = Settings(
            data=registry.data, api_keys=[api_key.digest], model_poll_seconds=0,
            outbox_url=f"sqlite:///{registry.root / 'schemathesis-outbox.db'}",
            max_batch_size=5, max_body_bytes=64 * 1024,
        )
        with running_server(create_app(app_settings)) as url:
            yield url


def _operations(base_url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_api_conforms_to_its_schema(base_url, api_key):
    """Every operation, with valid and invalid generated requests, a bounded number each."""
    operations = _operations(base_url)
    labels = {operation.label for operation in operations}
    assert {"POST /v1/scores", "GET /v1/customers/{customer_id}/score", "GET /v1/model",
            "GET /readyz"} <= labels, labels
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case) -> None:
            case.call_and_validate(base_url=base_url, headers=api_key.auth, checks=CHECKS)

        try:
            conforms()
        except Unsatisfiable:
            # nothing to make invalid (no parameters, no body): positive cases cover it
            assert mode is GenerationMode.NEGATIVE, operation.label
