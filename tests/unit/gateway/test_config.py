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
        with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS must be a whole number from 1 to "):
            GatewaySettings.from_env({"TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS": bad})


@pytest.mark.parametrize(("name", "bad"), [
    # a hold longer than a reserve may ask for (ttl_seconds, MAX_TTL_SECONDS): 1e12 s put its expiry
    # past the year 9999, and every gateway call's reserve failed in the wallet core (OverflowError)
    ("TOKENTILL_GATEWAY_HOLD_SECONDS", "604801"), ("TOKENTILL_GATEWAY_HOLD_SECONDS", "1000000000000"),
    # over the longest hold less the settle margin (604,790; it said a year, MOST_SECONDS, which no
    # hold could outlast); 1e400 s ended the start in an OverflowError traceback (too large for a float)
    ("TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS", "31536001"), ("TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS", "1" + "0" * 400),
])
def test_a_gateway_duration_past_its_bound_stops_the_start_naming_it(name, bad):
    with pytest.raises(SystemExit, match=f"{name} must be a whole number from 1 to "):
        GatewaySettings.from_env({name: bad})


def test_the_longest_gateway_durations_are_still_taken():
    # the longest hold, a week (604,800 s), covers a read timeout of 604,800 - 10 (the settle margin)
    s = GatewaySettings.from_env({"TOKENTILL_GATEWAY_HOLD_SECONDS": "604800",
                                  "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "604790"})
    assert (s.hold_seconds, s.read_timeout_s) == (604_800, 604_790.0)


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


@pytest.mark.parametrize("bad", ["https://h/v1?", "https://h/v1#", "https://h/v1/?", "https://h b/v1", "https://h/v 1"])
def test_an_upstream_url_with_an_empty_query_or_fragment_or_a_space_stops_the_start(bad):
    # urlsplit reads no query in "…/v1?" and no fragment in "…/v1#", so both were taken, and the
    # gateway adds the provider's path after them: "https://h/v1?" + "/chat/completions" went to
    # POST /v1 with the query "/chat/completions", "https://h/v1#" + it to POST /v1 (the path after
    # the # is a fragment, never sent), every call to the wrong endpoint; a space was sent as %20
    with pytest.raises(SystemExit, match="TOKENTILL_UPSTREAM_OPENAI must be an http"):
        GatewaySettings.from_env({"TOKENTILL_UPSTREAM_OPENAI": bad})


@pytest.mark.parametrize("name", ["TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS", "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS",
                                  "TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS",
                                  "TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES"])
def test_a_gateway_token_count_no_hold_can_count_stops_the_start_naming_it(name):
    # a hold counts at most 10**15 tokens (pricing.usage.MAX_QUANTITY): with a default cap of 10**20
    # every call that set none was refused, 400 "n: holds 1 choices of max_completion_tokens
    # 100000000000000000000: … past the 1000000000000000 a hold counts", naming a field its caller never set
    with pytest.raises(SystemExit, match=f"{name} must be a whole number from 1 to 1,000,000,000,000,000"):
        GatewaySettings.from_env({name: str(10**15 + 1)})
    ones = {n: "1" for n in ("TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES", "TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS",
                             "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS")}
    # the most: 10**15 output tokens; of the tools' uses x results and the prompt beside them, 10**15
    # in all (10**15 - 1 beside the others' 1 x 1, or 1 x 1 beside it: test_tool_results_the_start_takes_...)
    most = 10**15 if name == "TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS" else 10**15 - 1
    assert GatewaySettings.from_env({**ones, name: str(most)}) is not None


def test_server_tool_uses_whose_results_no_hold_can_count_stop_the_start_naming_both():
    # each use of a server tool is held its results' tokens: 10**12 uses of 10,000 tokens are
    # 10**16 tokens, past the 10**15 a hold counts, so every call with a web search was refused
    with pytest.raises(SystemExit, match="TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES × "
                                         "TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS"):
        GatewaySettings.from_env({"TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES": str(10**12)})
    # 99,999,999,960 × 10,000 = 999,999,999,600,000, and the default 400,000 of a prompt beside: 10**15
    s = GatewaySettings.from_env({"TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES": "99999999960"})
    assert (s.server_tool_max_uses, s.server_tool_result_tokens) == (99_999_999_960, 10_000)


def test_tool_results_the_start_takes_leave_room_for_a_prompt_beside_them():
    # a hold counts a call's prompt beside its tools' results: 10**11 uses of 10,000 tokens are
    # 10**15, all a hold counts, so the start took them and every Anthropic web search (and every
    # OpenAI responses call with one) that set no max_uses was refused, 400 "tools: holds
    # 1000000000000000 input tokens of tool results, past the 1000000000000000 a hold counts", its
    # prompt of a few tokens the difference. The results must leave room for a prompt of
    # TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS (400,000 by default; here 1,000,000):
    # 99,999,999,900 x 10,000 = 999,999,999,000,000, + 1,000,000 = 10**15, taken;
    # 99,999,999,901 x 10,000 = 999,999,999,010,000, + 1,000,000 = 10**15 + 10,000, not
    import msgspec

    from api.gateway.calls import MESSAGES, parse_call
    from pricing.tokens import TokenCounter

    uses, context = "TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES", "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS"
    for refused in ({uses: str(10**11)}, {uses: "99999999901", context: "1000000"}):
        with pytest.raises(SystemExit, match=f"{uses} × TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS"):
            GatewaySettings.from_env(refused)
    s = GatewaySettings.from_env({uses: "99999999900", context: "1000000"})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    c = parse_call(MESSAGES, msgspec.json.encode(body), default_max_output=s.default_max_output_tokens,
                   counter=TokenCounter(), server_tool_max_uses=s.server_tool_max_uses,
                   server_tool_result_tokens=s.server_tool_result_tokens)
    assert c.tool_uses == (("web_search", 99_999_999_900),)


@pytest.mark.parametrize(("env", "hold", "read"), [
    # the default read timeout, 600 s: a hold of 1 s expired while the upstream could still be
    # silent for 599 s more; 600 + 10 (the settle margin) = 610 s is the least taken
    ({"TOKENTILL_GATEWAY_HOLD_SECONDS": "1"}, 1, 600),
    ({"TOKENTILL_GATEWAY_HOLD_SECONDS": "609"}, 609, 600),
    # 30 + 10 = 40 > 39
    ({"TOKENTILL_GATEWAY_HOLD_SECONDS": "39", "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "30"}, 39, 30),
    # a longer read timeout alone outgrows the default hold: 620 + 10 = 630 > 610
    ({"TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "620"}, 610, 620),
])
def test_a_hold_shorter_than_the_read_timeout_and_the_settle_margin_stops_the_start_naming_both(env, hold, read):
    with pytest.raises(SystemExit) as stopped:
        GatewaySettings.from_env(env)
    assert stopped.value.code == (
        f"TOKENTILL_GATEWAY_HOLD_SECONDS ({hold:,}) must be at least TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS "
        f"({read:,}) + 10 (the settle margin) = {read + 10:,} seconds: a hold that expires while the upstream "
        "may still answer gives its money back to be spent before the call's settle")


def test_a_hold_of_the_read_timeout_and_the_settle_margin_is_taken():
    assert GatewaySettings.from_env({}).hold_seconds == 610  # 600 + 10, the defaults
    s = GatewaySettings.from_env({"TOKENTILL_GATEWAY_HOLD_SECONDS": "40",
                                  "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "30"})
    assert (s.hold_seconds, s.read_timeout_s) == (40, 30.0)


@pytest.mark.parametrize("read", ["604791", "31536000"])
def test_a_read_timeout_no_hold_can_outlast_says_so_not_a_hold_past_the_longest(read):
    """A read timeout past 604,800 - 10 = 604,790 s (TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS takes up
    to 365 days, 31,536,000 s) needs a hold of more than the longest one taken, 604,800 s: the start
    said 'TOKENTILL_GATEWAY_HOLD_SECONDS (604,800) must be at least ... = 604,801 seconds', which no
    hold is; it now names the read timeout and its longest, 604,790, as every bounded duration."""
    with pytest.raises(SystemExit) as stopped:
        GatewaySettings.from_env({"TOKENTILL_GATEWAY_HOLD_SECONDS": "604800",
                                  "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": read})
    assert stopped.value.code == (
        f"TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS must be a whole number from 1 to 604,790, not '{read}'")
