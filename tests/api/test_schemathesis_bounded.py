"""A bounded schemathesis run over every operation of the served document, through uvicorn on a
database of its own: no 5xx, and every answer (refusals of schema-violating input included) in a
documented status, content type (problem+json for errors), headers and body schema.

Deterministic and small: derandomized, the examples and coverage phases only (boundary and
missing values, schema-violating ones; this phase found the unreachable cursor maximum, where
5 fuzzed examples an operation did not); about 30-50 s. It guards the document against drift; the
deeper manual run (README, "schemathesis") seeds data and adds the acceptance checks, whose known
false positives (time-, state- and cross-field rules no schema states) keep them out of here."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.apps import api_app, live_server
from tests.conftest import _migrated

KEY = "fuzz-admin"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_url(server_url: str) -> Iterator[str]:
    yield from _migrated(server_url, f"tokentill_fuzz_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def live_url(fuzz_url: str) -> Iterator[str]:
    with live_server(fuzz_url, admin=KEY) as url:
        yield url


# the document, as the app serves it (rendering it needs no database)
DOCUMENT = api_app("postgresql://unused/unused", admin=KEY).openapi_schema.to_schema()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(allow_x00=False, deterministic=True)
schema.config.phases.update(phases=["examples", "coverage"])
schema.config.phases.coverage.unexpected_methods = set()  # 405 of other methods: test_keys_and_errors


@schema.parametrize()
@settings(max_examples=5, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_document(case, live_url: str):
    # POST /v1/price-books/import without a provider imports every genai-prices provider: on a
    # loaded machine the first one took longer than schemathesis's 10 s (README, "schemathesis")
    case.call_and_validate(base_url=live_url, headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS,
                           timeout=120)
