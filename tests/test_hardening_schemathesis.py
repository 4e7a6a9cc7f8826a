"""Schemathesis with a key and without one, on SQLite and (when enabled) PostgreSQL.

With a key: every generated request (valid and invalid, all operations) gets
no 5xx and a response that conforms to the schema. Without a key: every
protected route answers 401, whatever the path, query or body. The outbox on
PostgreSQL matters: NULs and over-long ids used to crash only there.
"""

from __future__ import annotations

import itertools
from collections import Counter

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

#: generated cases per operation and generation mode (the figures in docs/serving.md)
MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPEN_ROUTES = ("/healthz", "/readyz", "/metrics")


@pytest.fixture(scope="module")
def base_url(backend, tmp_path_factory, trained_registry, api_key, running_server,
             scratch_database):
    from serving.app import create_app

    with trained_registry.active() as registry, \
            scratch_database(backend, registry.root, prefix="hardening") as url:
        app_settings = Settings(data=registry.data, api_keys=[api_key.digest], model_poll_seconds=0,
                                outbox_url=url, max_batch_size=5, max_body_bytes=64 * 1024)
        with running_server(create_app(app_settings)) as base:
            yield base


def _run(base_url: str, check) -> Counter:
    """Run ``check(case)`` on every operation and generation mode; count status codes."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [operation.label for operation in operations]
    seen: Counter = Counter()
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            seen[check(case)] += 1

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label
    return seen


def test_with_a_key_no_request_gets_a_server_error(base_url, api_key):
    def check(case) -> int:
        response = case.call_and_validate(base_url=base_url, headers=api_key.auth, checks=CHECKS)
        return response.status_code

    seen = _run(base_url, check)
    print(f"\nschemathesis with a key: {sum(seen.values())} cases, {sorted(seen.items())}")
    assert not [code for code in seen if code >= 500], seen
    assert {200, 422} <= set(seen), seen


def test_without_a_key_every_protected_route_is_401(base_url, strict_json):
    def check(case) -> int:
        for name in [h for h in (case.headers or {}) if h.lower() == "authorization"]:
            del case.headers[name]
        response = case.call(base_url=base_url)
        if case.operation.path.startswith("/v1/"):
            assert response.status_code == 401, (case.operation.label, response.text)
            assert "API key" in strict_json(response.text)["detail"]
        else:
            assert case.operation.path in OPEN_ROUTES or case.operation.path.startswith("/docs")
            assert response.status_code < 500, (case.operation.label, response.text)
        return response.status_code

    seen = _run(base_url, check)
    print(f"\nschemathesis without a key: {sum(seen.values())} cases, {sorted(seen.items())}")
    assert seen[401] > 0, seen
