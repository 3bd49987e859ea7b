"""The gateway's settings, as read from the environment."""
from __future__ import annotations

import pytest

from api.gateway.config import GatewaySettings


def test_the_upstream_ca_setting_is_read_and_checked(tmp_path):
    from tests.upstream_tls import make_certs

    ca, _, _ = make_certs(tmp_path)
    assert GatewaySettings.from_env({"TOKENTILL_GATEWAY_UPSTREAM_CA": str(ca)}).upstream_ca == str(ca)
    assert GatewaySettings.from_env({}).upstream_ca is None
    with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_UPSTREAM_CA"):
        GatewaySettings.from_env({"TOKENTILL_GATEWAY_UPSTREAM_CA": str(tmp_path / "missing.pem")})



def test_upstream_urls_are_http_or_https_with_a_host_and_lose_their_trailing_slash():
    s = GatewaySettings.from_env({"TOKENTILL_UPSTREAM_OPENAI": "http://127.0.0.1:8081/v1/",
                                  "TOKENTILL_UPSTREAM_ANTHROPIC": "https://gw.example.com"})
    assert (s.openai_url, s.anthropic_url) == ("http://127.0.0.1:8081/v1", "https://gw.example.com")
    assert GatewaySettings.from_env({}).openai_url == "https://api.openai.com/v1"
    for bad in ("notaurl", "ftp://x/v1", "http:///v1", "http://host:99999", "https://h/v1?x=1", "https://h/v1#f",
                "https://user:secret@h/v1"):
        with pytest.raises(SystemExit, match="TOKENTILL_UPSTREAM_OPENAI must be an http"):
            GatewaySettings.from_env({"TOKENTILL_UPSTREAM_OPENAI": bad})



def test_the_context_held_for_a_continued_conversation_is_read_and_checked():
    assert GatewaySettings.from_env({}).context_hold_tokens == 400_000
    assert GatewaySettings.from_env({"TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS": "128000"}).context_hold_tokens == 128_000
    for bad in ("0", "-5", "lots"):
        with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS must be a whole number, 1 or more"):
            GatewaySettings.from_env({"TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS": bad})


@pytest.mark.parametrize(("name", "bad"), [
    # a hold longer than a reserve may ask for (ttl_seconds, MAX_TTL_SECONDS): 1e12 s put its expiry
    # past the year 9999, and every gateway call's reserve failed in the wallet core (OverflowError)
    ("TOKENTILL_GATEWAY_HOLD_SECONDS", "604801"), ("TOKENTILL_GATEWAY_HOLD_SECONDS", "1000000000000"),
    # over a year, as the other durations (api.settings.MOST_SECONDS); 1e400 s ended the start in an
    # OverflowError traceback (too large for a float)
    ("TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS", "31536001"), ("TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS", "1" + "0" * 400),
])
def test_a_gateway_duration_past_its_bound_stops_the_start_naming_it(name, bad):
    with pytest.raises(SystemExit, match=f"{name} must be a whole number from 1 to "):
        GatewaySettings.from_env({name: bad})


def test_the_longest_gateway_durations_are_still_taken():
    s = GatewaySettings.from_env({"TOKENTILL_GATEWAY_HOLD_SECONDS": "604800",
                                  "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "31536000"})
    assert (s.hold_seconds, s.read_timeout_s) == (604_800, 31_536_000.0)


def test_the_betas_a_call_may_carry_are_the_default_list_or_the_operators():
    default = GatewaySettings.from_env({})
    assert "context-1m-2025-08-07" in default.anthropic_betas and not default.openai_betas
    s = GatewaySettings.from_env({"TOKENTILL_GATEWAY_ANTHROPIC_BETAS": " skills-2025-10-02,files-api-2025-04-14 ",
                                  "TOKENTILL_GATEWAY_OPENAI_BETAS": "assistants=v2"})
    assert s.anthropic_betas == {"skills-2025-10-02", "files-api-2025-04-14"} and s.openai_betas == {"assistants=v2"}
    assert GatewaySettings.from_env({"TOKENTILL_GATEWAY_ANTHROPIC_BETAS": "none"}).anthropic_betas == frozenset()
    for bad in ("a,,b", "a b", "x,"):
        with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_ANTHROPIC_BETAS"):
            GatewaySettings.from_env({"TOKENTILL_GATEWAY_ANTHROPIC_BETAS": bad})


def test_the_service_tier_setting_is_provider_or_standard():
    assert GatewaySettings.from_env({}).service_tier == "provider"
    assert GatewaySettings.from_env({"TOKENTILL_GATEWAY_SERVICE_TIER": "standard"}).service_tier == "standard"
    with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_SERVICE_TIER"):
        GatewaySettings.from_env({"TOKENTILL_GATEWAY_SERVICE_TIER": "priority"})
