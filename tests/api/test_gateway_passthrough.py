"""The providers' free, read-only endpoints (models list and retrieve, Anthropic's count_tokens)
pass through the gateway unmetered, driven by the official clients against the fake upstream:
the caller's tokentill key is checked, the upstream's key is sent, nothing reaches the ledger;
every other provider path stays 404."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from api.bench import fake_upstream as fk
from api.bench.common import free_port
from tests.api import test_gateway
from tests.api.test_gateway import HI, admin, claude, customer, oai, serving, wallet

fake = test_gateway.fake  # the fake upstream (a fixture)


@pytest.fixture(scope="module")
def live(database_url, fake) -> Iterator[tuple[str, str]]:
    yield from serving(database_url, fake)


def journal(url: str, cid: str) -> list[dict[str, Any]]:
    with admin(url) as http:
        page = http.get("/v1/journal", params={"customer": cid})
        assert page.status_code == 200, page.text
        return page.json()["entries"]


def metric(url: str, provider: str, kind: str, outcome: str) -> float:
    line = f'tokentill_gateway_calls_total{{kind="{kind}",outcome="{outcome}",provider="{provider}"}} '
    found = [row for row in httpx.get(f"{url}/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_openai_models_pass_through_with_the_upstreams_key_and_nothing_is_written(live, fake):
    url, _ = live
    cid, key = customer(live)
    entries, listed_before = journal(url, cid), metric(url, "openai", "models.list", "passed")
    client = oai(url, key)
    raw = client.models.with_raw_response.list()
    assert [m.id for m in raw.parse()] == list(fk.MODELS)
    assert raw.headers["x-tokentill-charged"] == "0" and raw.headers["x-request-id"] == "fake"
    assert "x-tokentill-reserved" not in raw.headers
    sent = fake.fake.calls[-1]
    assert (sent.path, sent.query) == ("/v1/models", "")
    assert sent.headers["authorization"] == "Bearer sk-upstream-openai" and key not in str(sent.headers)
    model = client.models.retrieve("ft:gpt-4o-mini:acme::a1b2")
    assert (model.id, model.owned_by) == ("ft:gpt-4o-mini:acme::a1b2", "fake")
    assert fake.fake.calls[-1].path == "/v1/models/ft:gpt-4o-mini:acme::a1b2"
    assert wallet(url, cid) == (Decimal("10"), 0) and journal(url, cid) == entries
    assert metric(url, "openai", "models.list", "passed") == listed_before + 1


def test_anthropic_models_and_count_tokens_pass_through_with_the_query_and_the_upstreams_key(live, fake):
    url, _ = live
    cid, key = customer(live)
    entries = journal(url, cid)
    client = claude(url, key)
    page = client.models.list(limit=2)
    assert [m.id for m in page.data] == list(fk.MODELS) and page.has_more is False
    sent = fake.fake.calls[-1]
    assert (sent.path, sent.query) == ("/v1/models", "limit=2")
    assert sent.headers["x-api-key"] == "sk-upstream-anthropic" and "authorization" not in sent.headers
    assert client.models.retrieve("claude-test").display_name == "claude-test"
    assert fake.fake.calls[-1].path == "/v1/models/claude-test"
    counted = client.messages.count_tokens(model="claude-test", messages=HI)
    assert counted.input_tokens == fk.COUNTED_TOKENS
    sent = fake.fake.calls[-1]
    assert (sent.path, sent.body) == ("/v1/messages/count_tokens", {"model": "claude-test", "messages": HI})
    assert sent.headers["x-api-key"] == "sk-upstream-anthropic" and key not in str(sent.headers)
    assert wallet(url, cid) == (Decimal("10"), 0) and journal(url, cid) == entries
    assert metric(url, "anthropic", "messages.count_tokens", "passed") >= 1


def test_a_key_of_several_customers_lists_models_without_naming_one(live):
    url, _ = live
    with admin(url) as http:
        several = http.post("/v1/api-keys", json={"scope": "inference"}).json()["key"]
    assert [m.id for m in oai(url, several).models.list()] == list(fk.MODELS)


def test_upstream_errors_pass_through_unchanged(live):
    url, _ = live
    _, key = customer(live)
    with pytest.raises(openai.NotFoundError) as raised:
        oai(url, key).models.retrieve("gpt-gone-missing")
    assert raised.value.body["code"] == "model_not_found" and raised.value.response.headers["x-request-id"] == "fake"
    assert raised.value.response.headers["x-tokentill-charged"] == "0"
    with pytest.raises(anthropic.NotFoundError) as raised_too:
        claude(url, key).models.retrieve("claude-gone-missing")
    assert raised_too.value.body == {"type": "error", "error": {"type": "not_found_error",
                                                                "message": "model: claude-gone-missing"}}
    assert metric(url, "anthropic", "models.retrieve", "upstream_error") >= 1


def test_keys_are_checked_before_any_upstream_call(live, fake):
    url, _ = live
    cid, _ = customer(live)
    with admin(url) as http:
        reader = http.post("/v1/api-keys", json={"scope": f"customer:{cid}"}).json()["key"]
    before = len(fake.fake.calls)
    with pytest.raises(openai.AuthenticationError) as raised:
        oai(url, "not-a-key").models.list()
    assert raised.value.body["code"] == "unauthorized"
    with pytest.raises(anthropic.AuthenticationError) as raised_too:
        claude(url, "not-a-key").messages.count_tokens(model="claude-test", messages=HI)
    assert raised_too.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        oai(url, reader).models.retrieve("gpt-test")
    assert denied.value.body["code"] == "forbidden"
    with pytest.raises(anthropic.PermissionDeniedError):
        claude(url, reader).models.list()
    assert len(fake.fake.calls) == before


def test_billable_and_unlisted_paths_stay_404_and_never_reach_the_upstream(live, fake):
    url, _ = live
    _, key = customer(live)
    before = len(fake.fake.calls)
    client = oai(url, key)
    with pytest.raises(openai.NotFoundError) as raised:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
    assert raised.value.body["code"] == "not_found"
    # the refusal names the path the caller sent, not the mount's remainder ("/files/")
    assert raised.value.body["message"] == "the gateway does not serve /openai/v1/files"
    with pytest.raises(openai.NotFoundError):
        client.batches.list()
    with pytest.raises(openai.APIStatusError) as deleting:  # deleting a fine-tuned model is not read-only
        client.models.delete("ft:gpt-4o-mini:acme::a1b2")
    assert deleting.value.status_code == 405
    with pytest.raises(anthropic.NotFoundError) as listing:
        claude(url, key).beta.files.list()
    assert listing.value.body["error"]["message"] == "the gateway does not serve /anthropic/v1/files"
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        assert http.get("/anthropic/v1/models/a/b").status_code == 404
        assert http.get("/anthropic/v1/models/%2E%2E").status_code == 404  # never resolved to the upstream's /
    assert len(fake.fake.calls) == before


def test_a_wrong_method_is_405_naming_the_allowed_one(live, fake):
    """RFC 9110 15.5.6: a 405 names the methods the resource takes, on the gateway's mounts as on
    the API; each of its paths takes one."""
    url, _ = live
    _, key = customer(live)
    before = len(fake.fake.calls)
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        for method, path, allowed in [("DELETE", "/openai/v1/models/ft:gpt-4o-mini:acme::a1b2", "GET"),
                                      ("POST", "/openai/v1/models", "GET"),
                                      ("HEAD", "/anthropic/v1/models", "GET"),  # the mounts answer no HEAD
                                      ("GET", "/anthropic/v1/messages/count_tokens", "POST"),
                                      ("GET", "/openai/v1/chat/completions", "POST"),
                                      ("PUT", "/anthropic/v1/messages", "POST")]:
            answer = http.request(method, path)
            assert answer.status_code == 405, (method, path, answer.text)
            assert answer.headers.get("allow") == allowed, (method, path, answer.headers)
            assert answer.headers["x-tokentill-charged"] == "0"
    assert len(fake.fake.calls) == before


@pytest.fixture(scope="module")
def unreachable(database_url, fake) -> Iterator[tuple[str, str]]:
    closed = free_port()  # nothing listens there
    yield from serving(database_url, fake, openai_url=f"http://127.0.0.1:{closed}/v1",
                       anthropic_url=f"http://127.0.0.1:{closed}")


def test_an_unreachable_upstream_is_a_provider_shaped_502(unreachable):
    url, _ = unreachable
    cid, key = customer(unreachable)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).models.list()
    assert raised.value.status_code == 502 and raised.value.body["code"] == "upstream_unavailable"
    with pytest.raises(anthropic.APIStatusError) as raised_too:
        claude(url, key).messages.count_tokens(model="claude-test", messages=HI)
    assert raised_too.value.status_code == 502 and raised_too.value.body["error"]["code"] == "upstream_unavailable"
    # a metered call too: released, and each 502 says nothing was charged
    with pytest.raises(openai.APIStatusError) as metered:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI, stream=True)
    with pytest.raises(anthropic.APIStatusError) as metered_too:
        claude(url, key).messages.create(model="claude-test", max_tokens=10, messages=HI)
    for error in (raised, raised_too, metered, metered_too):
        assert error.value.status_code == 502 and error.value.response.headers["x-tokentill-charged"] == "0"
    assert wallet(url, cid) == (Decimal("10"), 0)
