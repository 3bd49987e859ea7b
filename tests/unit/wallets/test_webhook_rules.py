"""The pure webhook rules: topics and URLs an endpoint may have, secrets, and the retry schedule."""
from __future__ import annotations

import base64
import ipaddress
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallets.errors import WalletValidationError
from wallets.webhooks.rules import (
    TOPIC_PATTERN,
    AddressPolicy,
    RetryPolicy,
    check_destination,
    check_topics,
    check_url,
    new_secret,
    parse_networks,
)

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


@pytest.mark.parametrize("topics, field", [
    (["budget.threshold"], "topics[0]"), (["balance.lowe"], "topics[0]"),
    (["*", "budget.thresholds_crossed"], "topics[1]"), (["invoice.finalised"], "topics[0]"),
    (["webhook_endpoint.disabled.x"], "topics[0]")])
def test_an_event_its_family_does_not_have_is_refused_by_position(topics, field):
    # a misspelt event of a known family was taken, and the endpoint subscribed to nothing
    with pytest.raises(WalletValidationError) as refused:
        check_topics(topics)
    assert refused.value.context["fields"][0]["field"] == field
    assert "budget.threshold_crossed" in refused.value.context["fields"][0]["message"]  # says which there are


def test_every_event_written_to_the_outbox_is_a_topic_an_endpoint_may_name():
    root = Path(__file__).resolve().parents[3]
    written = {m for path in root.glob("wallets/**/*.py") for m in re.findall(
        r"""(?:\.event\(|_TOPIC = |topic = )[^"\n]*"([a-z_]+\.[a-z_]+)"(?: if [^"\n]* else "([a-z_]+\.[a-z_]+)")?""",
        path.read_text())}
    topics = {t for pair in written for t in pair if t}
    assert {"budget.threshold_crossed", "invoice.paid", "wallet.unblocked", "webhook_endpoint.disabled"} <= topics
    assert check_topics(sorted(topics)) == sorted(topics)
    assert all(re.fullmatch(TOPIC_PATTERN, t) for t in topics)


@pytest.mark.parametrize("url", ["https://hooks.example.com/tokentill", "http://127.0.0.1:8080/x?y=1"])
def test_http_and_https_urls_with_a_host_are_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize("url", ["ftp://example.com/", "https:///path", "https://u:p@example.com/",
                                 "https://example.com/#frag", "https://example.com:99999/", "example.com",
                                 "https://example.com:0/", "https://example.com:000/",  # no port 0 to connect to
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


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.0.10", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("fc00::1", "private"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "non-public"),
    ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a00:1", "private"),
    ("192.0.2.7", "private"), ("240.0.0.1", "reserved")])
def test_deliveries_may_not_reach_internal_addresses(address, kind):
    reason = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", [
    "::7f00:1",  # IPv4-compatible ::127.0.0.1 (deprecated, reserved ::/8)
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT) 127.0.0.1
    "64:ff9b:1::7f00:1",  # local-use NAT64 (RFC 8215): never public
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "fec0::1",  # site-local (deprecated, routed inside a site)
    "192.0.0.8",  # IETF protocol assignments (192.0.0.0/24): not public
])
def test_other_spellings_and_ranges_of_internal_addresses_are_refused(address):
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:808:808::1", "192.0.0.9"])
def test_public_addresses_are_allowed(address):
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_networks_the_operator_names_are_allowed_and_nothing_else_of_their_kind():
    policy = AddressPolicy(parse_networks(" 10.0.0.0/8, 127.0.0.1 ,fd00::/8"))
    for allowed in ("10.9.8.7", "127.0.0.1", "fd12::1", "::ffff:10.0.0.1"):
        assert policy.refusal(ipaddress.ip_address(allowed)) is None, allowed
    for refused in ("127.0.0.2", "192.168.1.1", "fe80::1"):
        assert policy.refusal(ipaddress.ip_address(refused)) is not None, refused


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "example.com", "10.0.0.0/8,,nope"])
def test_a_network_list_with_something_else_is_refused_naming_it(raw):
    with pytest.raises(ValueError, match="is not a network"):
        parse_networks(raw)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://LOCALHOST./x", "http://api.localhost/x",
                                 "https://[::1]/x", "http://10.0.0.5/x"])
def test_an_endpoint_at_an_internal_address_literal_is_refused_when_named(url):
    with pytest.raises(WalletValidationError) as refused:
        check_destination(url, AddressPolicy())
    assert refused.value.context["fields"][0]["field"] == "url"


@pytest.mark.parametrize(("url", "address"), [
    ("http://2130706433/x", "127.0.0.1"), ("http://0x7f000001/x", "127.0.0.1"), ("http://127.1/x", "127.0.0.1"),
    ("http://10.1:8080/x", "10.0.0.1"), ("http://192.168.1/x", "192.168.0.1"), ("http://0/x", "0.0.0.0"),
    ("http://169.254.43518/x", "169.254.169.254"), ("http://127\u30020\u30020\u30021/x", "127.0.0.1"),
])
def test_an_internal_address_in_a_shorthand_the_resolver_reads_as_one_is_refused_when_named(url, address):
    # The resolver takes these as address literals, never looking a name up (2130706433 is
    # 127.0.0.1, 10.1 is 10.0.0.1, a full-width dot is a dot); they were accepted as host names
    # (201), and every delivery then failed at connect for three days until the endpoint was disabled.
    with pytest.raises(WalletValidationError) as refused:
        check_destination(url, AddressPolicy())
    assert f": {address} is a" in refused.value.context["fields"][0]["message"]


@pytest.mark.parametrize("url", ["http://8.8.8.8/x", "http://134744072/x", "http://0x1.example.com/x",
                                 "http://deadbeef/x", "http://1e3.example/x"])
def test_a_public_address_in_any_spelling_and_names_that_only_look_numeric_pass(url):
    assert check_destination(url, AddressPolicy()) == url


@pytest.mark.parametrize(("url", "message"), [
    ("http://localhost:9999/hook", "deliveries may not go to localhost: 127.0.0.1 is a loopback address"),
    ("http://10.0.0.5/x", "deliveries may not go to 10.0.0.5: 10.0.0.5 is a private address"),
    ("http://0.0.0.0/x", "deliveries may not go to 0.0.0.0: 0.0.0.0 is an unspecified address"),
])
def test_the_refusal_names_the_host_then_why_in_one_sentence(url, message):
    # The message read "deliveries may not go to 127.0.0.1 is a loopback address" (two clauses
    # run together, and `localhost` not named).
    with pytest.raises(WalletValidationError) as refused:
        check_destination(url, AddressPolicy())
    assert refused.value.context["fields"][0]["message"].startswith(message)


def test_host_names_are_checked_when_a_delivery_connects_not_when_named():
    assert check_destination("https://hooks.example.com/x", AddressPolicy()) == "https://hooks.example.com/x"
    assert check_destination("http://127.0.0.1/x", AddressPolicy(parse_networks("127.0.0.0/8")))
