"""A client's `timeout` and its other numeric options are refused when the client is built, a
ValueError naming the option (`api.client.options_problem`), where they were taken and failed at a
call: `timeout=0` every call at once (`ConnectError`, each settle spooled), a negative one or a NaN
at the first call (`ValueError: Timeout value out of range`, `Invalid value NaN`), an infinity
there too (`OverflowError: timestamp out of range for platform time_t`); `retries=-1`,
`backoff_s=nan` and the like were taken as they came."""

from __future__ import annotations

import math

import httpx
import pytest

from api.client import AsyncClient, Client

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("timeout", 0, "timeout must be a finite number of seconds, more than 0, not 0"),
        ("timeout", -1, "timeout must be a finite number of seconds, more than 0, not -1"),
        ("timeout", NAN, "timeout must be a finite number of seconds, more than 0, not nan"),
        ("timeout", INF, "timeout must be a finite number of seconds, more than 0, not inf"),
        ("timeout", "10", "timeout must be a finite number of seconds, more than 0, not '10'"),
        ("retries", -1, "retries must be a whole number, 0 or more, not -1"),
        ("retries", 1.5, "retries must be a whole number, 0 or more, not 1.5"),
        ("retries", True, "retries must be a whole number, 0 or more, not True"),
        ("backoff_s", 0, "backoff_s must be a finite number of seconds, more than 0, not 0"),
        ("backoff_s", NAN, "backoff_s must be a finite number of seconds, more than 0, not nan"),
        ("max_backoff_s", INF, "max_backoff_s must be a finite number of seconds, more than 0, not inf"),
        ("max_retry_after_s", -0.5, "max_retry_after_s must be a finite number of seconds, 0 or more, not -0.5"),
        ("retry_budget_s", NAN, "retry_budget_s must be a finite number of seconds, 0 or more, not nan"),
        ("settle_deadline_s", 0, "settle_deadline_s must be a finite number of seconds, more than 0, not 0"),
        ("settle_margin_s", -INF, "settle_margin_s must be a finite number of seconds, 0 or more, not -inf"),
        ("drain_timeout_s", NAN, "drain_timeout_s must be a finite number of seconds, 0 or more, not nan"),
    ],
)
@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_a_numeric_option_no_call_can_work_with_is_refused_when_the_client_is_built(
    tmp_path, kind, option, value, words
):
    with pytest.raises(ValueError) as refused:
        kind("http://127.0.0.1:8000", "secret", spool_dir=tmp_path, flush_spool=False, **{option: value})
    assert str(refused.value) == words
    assert not any(tmp_path.iterdir())  # nothing made


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": None},  # no timeout, as httpx has it
        {"timeout": httpx.Timeout(5.0, connect=1.0)},
        {
            "timeout": 0.3,
            "retries": 0,
            "backoff_s": 1e-6,
            "max_backoff_s": 1e-6,
            "max_retry_after_s": 0,
            "retry_budget_s": 0,
            "settle_deadline_s": 0.05,
            "settle_margin_s": 0,
            "drain_timeout_s": 0,
        },
    ],
)
def test_the_edges_that_work_are_taken(tmp_path, options):
    """Guard: 0 retries, no waiting at close, a tiny backoff, no timeout at all (None), or httpx's own."""
    Client("http://127.0.0.1:8000", "secret", spool_dir=tmp_path, flush_spool=False, **options).close()
