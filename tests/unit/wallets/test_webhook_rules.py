"""The pure webhook rules: topics and URLs an endpoint may have, secrets, and the retry schedule."""
from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallets.errors import WalletValidationError
from wallets.webhooks.rules import RetryPolicy, check_topics, check_url, new_secret

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_topics_are_events_families_or_everything_and_duplicates_are_dropped():
    assert check_topics(["balance.low", "invoice.*", "*", "balance.low"]) == ["balance.low", "invoice.*", "*"]


@pytest.mark.parametrize("topics, field", [
    ([], "topics"), (["balanse.low"], "topics[0]"), (["*", "balance"], "topics[1]"),
    (["balance.low.*x"], "topics[0]"), (["Balance.low"], "topics[0]"), (["balance.*.low"], "topics[0]")])
def test_a_topic_outside_the_known_families_is_refused_by_position(topics, field):
    with pytest.raises(WalletValidationError) as refused:
        check_topics(topics)
    assert refused.value.context["fields"][0]["field"] == field


@pytest.mark.parametrize("url", ["https://hooks.example.com/tokentill", "http://127.0.0.1:8080/x?y=1"])
def test_http_and_https_urls_with_a_host_are_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize("url", ["ftp://example.com/", "https:///path", "https://u:p@example.com/",
                                 "https://example.com/#frag", "https://example.com:99999/", "example.com",
                                 "https://exa mple.com/", "https://example.com/" + "x" * 2048])
def test_other_urls_are_refused(url):
    with pytest.raises(WalletValidationError):
        check_url(url)


def test_a_secret_is_whsec_and_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_the_default_schedule_doubles_from_5_s_to_a_4_h_cap_within_3_days():
    policy, rand = RetryPolicy(), random.Random(7)
    at, attempt, waits = T0, 1, []
    while (retry := policy.next_attempt(T0, at, attempt, rand)) is not None:
        waits.append(retry - at)
        at, attempt = retry, attempt + 1
    assert timedelta(seconds=2.5) <= waits[0] <= timedelta(seconds=5)
    assert max(waits) <= timedelta(hours=4)
    assert at == T0 + timedelta(days=3), "the last attempt falls at the end of the window"
    assert 25 <= attempt <= 40, attempt


@given(st.integers(1, 200), st.floats(0.01, 100), st.floats(1, 10_000), st.randoms(use_true_random=False))
def test_a_retry_waits_half_to_all_of_the_capped_doubling_and_never_passes_the_window(attempt, base, cap, rand):
    policy = RetryPolicy(base_s=base, cap_s=cap, window_s=86400)
    full = min(cap, base * 2 ** (attempt - 1))
    wait = policy.delay(attempt, rand).total_seconds()
    assert full * 0.5 - 1e-6 <= wait <= full + 1e-6
    failed_at = T0 + timedelta(seconds=rand.uniform(0, 90000))
    retry = policy.next_attempt(T0, failed_at, attempt, rand)
    if failed_at >= T0 + timedelta(days=1):
        assert retry is None
    else:
        assert failed_at < retry <= T0 + timedelta(days=1)
