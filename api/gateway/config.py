"""The gateway's settings: where each provider's upstream is, the key it is called with, and the
bounds of a call. Read once with the rest of `Settings`; nothing here reads the environment later."""
from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from api.bearer import key_problem
from api.gateway.calls import SERVER_TOOL_MAX_USES, SERVER_TOOL_RESULT_TOKENS
from pricing.usage import MAX_QUANTITY
from wallets.commands import MAX_TTL_SECONDS

# the prompt held for a call continuing a conversation whose model's context window no book names
CONTEXT_HOLD_TOKENS = 400_000

# The betas (`anthropic-beta`, `openai-beta` values) a call may carry upstream unless the operator lists
# its own (TOKENTILL_GATEWAY_ANTHROPIC_BETAS, TOKENTILL_GATEWAY_OPENAI_BETAS): a beta can switch on a
# feature billed at prices the gateway does not meter, so one not listed is refused (400), never
# forwarded. Listed here: those whose effect on the bill the gateway holds and charges, either by
# nothing (streaming, thinking display, token counting, output caps the hold already bounds) or by
# what the body shows it (caching, PDFs, files, computer use, code execution, web fetch, MCP,
# compaction); and the three that choose dearer prices, which a call may carry only when its book
# prices them itself (pricing.premium): a one-hour cache write, long context, fast mode.
DEFAULT_ANTHROPIC_BETAS = frozenset({
    "prompt-caching-2024-07-31", "pdfs-2024-09-25", "token-counting-2024-11-01", "token-efficient-tools-2025-02-19",
    "output-128k-2025-02-19", "output-300k-2026-03-24", "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14", "computer-use-2024-10-22", "computer-use-2025-01-24",
    "computer-use-2025-11-24", "code-execution-2025-05-22", "code-execution-2025-08-25", "web-fetch-2025-09-10",
    "mcp-client-2025-04-04", "mcp-client-2025-11-20", "context-management-2025-06-27", "compact-2026-01-12",
    "files-api-2025-04-14", "structured-outputs-2025-11-13", "model-context-window-exceeded-2025-08-26",
    "extended-cache-ttl-2025-04-11", "context-1m-2025-08-07", "fast-mode-2026-02-01"})
# OpenAI's betas switch on its assistants, agents and realtime APIs, none of which the gateway serves
DEFAULT_OPENAI_BETAS: frozenset[str] = frozenset()
OPENAI_URL = "https://api.openai.com/v1"  # what the openai SDK takes as base_url
ANTHROPIC_URL = "https://api.anthropic.com"  # what the anthropic SDK takes as base_url


# The longest duration a setting takes (api.settings too): a year. Longer meant nothing and broke
# what runs without a request: a seal interval of 1e17 s ended `serve` in APScheduler's
# OverflowError, a webhook retry window of 1e12 s put each failed attempt's next one past the year
# 9999 (unrecordable: sent again at every lease, forever), a webhook timeout of 1e300 s a lease
# PostgreSQL's interval cannot hold, a gateway read timeout of 1e400 s no float at all.
MOST_SECONDS = 365 * 86_400

# The longest a whole answer waits for its settle's charge (settle mode "wait"; api.gateway.settles),
# and so the least a hold must outlast the upstream's longest silence by: a hold shorter than the
# read timeout (TOKENTILL_GATEWAY_HOLD_SECONDS=1 beside 600 s) expired while the upstream could
# still answer, unless each renewal came in time, and gave its money back before the settle.
SETTLE_MARGIN_SECONDS = 10


def digits(text: str) -> bool:
    """Whether `text` is ASCII digits alone: int() also reads any Unicode digit (٤ is 4), `_`
    between digits, a sign and spaces around."""
    return text.isascii() and text.isdigit()


# A number of seconds, in ASCII: digits with a fraction (2.5, .5) and an exponent (1e1); float()
# also reads other digits (٥), `_` between digits, spaces around, inf and nan.
SECONDS = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)


def seconds_number(text: str) -> float | None:
    """`text` as a number of seconds (any sign-less decimal), or None when it is not one."""
    return float(text) if SECONDS.fullmatch(text) else None


def whole_number(env: Mapping[str, str], name: str, default: int, *, most: int | None = None) -> int:
    """A whole number, at least 1 (and at most `most`), for every count and whole-seconds duration
    (api.settings too): 0 or less means nothing they count (a pool of 0 connections is SQLAlchemy's
    unbounded pool, a seal interval of 0 a busy loop)."""
    raw = env.get(name, "")
    value = default if not raw else int(raw) if digits(raw) else 0
    if value < 1 or (most is not None and value > most):
        bounds = ", 1 or more" if most is None else f" from 1 to {most:,}"
        raise SystemExit(f"{name} must be a whole number{bounds}, not {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    openai_url: str = OPENAI_URL
    openai_key: str | None = field(default=None, repr=False)  # the bearer upstream; the caller's key never is
    anthropic_url: str = ANTHROPIC_URL
    anthropic_key: str | None = field(default=None, repr=False)  # sent upstream as x-api-key
    default_max_output_tokens: int = 4096  # the output cap a call that sets none is held for, and sent with
    # The prompt held for a call that continues a conversation (previous_response_id, conversation)
    # when neither its price book nor genai-prices knows the model's context window.
    context_hold_tokens: int = CONTEXT_HOLD_TOKENS
    # Anthropic's server tools (web search, web fetch): the uses a tool without max_uses is sent
    # with (an OpenAI responses call's web search without max_tool_calls too), and the input
    # tokens held per use for its results (a web fetch's max_content_tokens when it sets none).
    # api.gateway.tools
    server_tool_max_uses: int = SERVER_TOOL_MAX_USES
    server_tool_result_tokens: int = SERVER_TOOL_RESULT_TOKENS
    # a gateway reservation's TTL: at least the read timeout and the settle margin (600 + 10)
    hold_seconds: int = 610
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0  # the longest an upstream may stay silent (between stream events too)
    connect_retries: int = 2  # retried only when the connection failed: the request was never sent
    max_body_bytes: int = 32 * 1024 * 1024  # a caller's request (images inline in base64 are big)
    max_upstream_connections: int = 1000
    # A PEM file of CA certificates trusted for the upstreams besides the default ones (certifi's,
    # or $SSL_CERT_FILE's): an upstream behind a private CA, a self-signed test server.
    upstream_ca: str | None = None
    spool_dir: str | None = None  # where settles wait for the ledger (None: $TOKENTILL_SPOOL_DIR, else the SDK's)
    # "wait": a whole answer waits for its settle and carries x-tokentill-charged; "background":
    # it goes back once the settle is spooled, with the hold (x-tokentill-reserved) only.
    settle: str = "wait"
    anthropic_betas: frozenset[str] = DEFAULT_ANTHROPIC_BETAS  # the anthropic-beta values a call may carry
    openai_betas: frozenset[str] = DEFAULT_OPENAI_BETAS  # the openai-beta values a call may carry
    # "provider": a call that leaves its service tier to the provider (none, "auto") goes as it came,
    # held at the dearest tier the book prices and charged at the one its answer reports; "standard":
    # it is sent with the standard tier (OpenAI "default", Anthropic "standard_only"), so a project or
    # organization that defaults to priority never serves it at prices its book may not set
    service_tier: str = "provider"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        return cls(
            openai_url=upstream_url(env, "TOKENTILL_UPSTREAM_OPENAI", OPENAI_URL),
            openai_key=key(env, "TOKENTILL_UPSTREAM_OPENAI_KEY"),
            anthropic_url=upstream_url(env, "TOKENTILL_UPSTREAM_ANTHROPIC", ANTHROPIC_URL),
            anthropic_key=key(env, "TOKENTILL_UPSTREAM_ANTHROPIC_KEY"),
            # token counts a hold can count (MAX_QUANTITY): with a cap of 10**20, every call that set
            # none was refused, 400 naming a field (`n`) its caller never set
            default_max_output_tokens=whole_number(env, "TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS", 4096,
                                                   most=MAX_QUANTITY),
            context_hold_tokens=whole_number(env, "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS", CONTEXT_HOLD_TOKENS,
                                             most=MAX_QUANTITY),
            server_tool_max_uses=whole_number(env, "TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES", SERVER_TOOL_MAX_USES,
                                              most=MAX_QUANTITY),
            server_tool_result_tokens=_tool_results(env),
            hold_seconds=_hold(env),
            read_timeout_s=float(_read_timeout(env)),
            upstream_ca=_ca_file(env, "TOKENTILL_GATEWAY_UPSTREAM_CA"),
            spool_dir=env.get("TOKENTILL_SPOOL_DIR") or None,
            settle=settle_mode(env.get("TOKENTILL_GATEWAY_SETTLE") or "wait", "TOKENTILL_GATEWAY_SETTLE"),
            anthropic_betas=betas(env, "TOKENTILL_GATEWAY_ANTHROPIC_BETAS", DEFAULT_ANTHROPIC_BETAS),
            openai_betas=betas(env, "TOKENTILL_GATEWAY_OPENAI_BETAS", DEFAULT_OPENAI_BETAS),
            service_tier=service_tier_mode(env.get("TOKENTILL_GATEWAY_SERVICE_TIER") or "provider",
                                           "TOKENTILL_GATEWAY_SERVICE_TIER"),
        )


def key(env: Mapping[str, str], name: str) -> str | None:
    """A key (sent as, or compared with, one header value), or None when unset: a space, a line
    break (a key read from a file keeps its newline), another control character or a character
    outside ASCII in it stops the start (a header is read as latin-1: an é sent as UTF-8 matched
    no key, and httpx sends none). The message does not repeat the key."""
    raw = env.get(name) or None
    if raw is not None and (problem := key_problem(name, raw)) is not None:
        raise SystemExit(problem)
    return raw


def upstream_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An upstream's base URL: http or https, with a host, no query or fragment (the gateway adds
    the provider's paths to it), without its trailing slash; anything else stops the start."""
    raw = env.get(name) or default
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        parts = None
    # "?" and "#" themselves, not only a query or fragment urlsplit reads: "https://h/v1?" or "…#"
    # took every call to POST /v1 (the provider's path became the query, or a fragment never sent)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "?" in raw or "#" in raw \
            or "@" in parts.netloc or any(c.isspace() or not c.isprintable() for c in raw):
        raise SystemExit(f"{name} must be an http(s) URL with a host and no query or fragment, e.g. {default}, "
                         f"not {raw!r}")
    return raw.rstrip("/")


def _read_timeout(env: Mapping[str, str]) -> int:
    """At most what the longest hold outlasts by the settle margin (604,790 s): past it (a year was
    taken) the start asked for a hold longer than any, TOKENTILL_GATEWAY_HOLD_SECONDS' bound."""
    return whole_number(env, "TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS", 600,
                        most=MAX_TTL_SECONDS - SETTLE_MARGIN_SECONDS)


def _hold(env: Mapping[str, str]) -> int:
    """A gateway call's hold: no longer than a reserve may ask for (1e12 s put its expiry past the
    year 9999 and every call's reserve failed in the wallet core), and no shorter than the upstream
    may stay silent plus the settle margin."""
    hold = whole_number(env, "TOKENTILL_GATEWAY_HOLD_SECONDS", 610, most=MAX_TTL_SECONDS)
    read = _read_timeout(env)
    if hold < read + SETTLE_MARGIN_SECONDS:
        raise SystemExit(f"TOKENTILL_GATEWAY_HOLD_SECONDS ({hold:,}) must be at least "
                         f"TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS ({read:,}) + {SETTLE_MARGIN_SECONDS} (the settle "
                         f"margin) = {read + SETTLE_MARGIN_SECONDS:,} seconds: a hold that expires while the upstream "
                         "may still answer gives its money back to be spent before the call's settle")
    return hold


def _tool_results(env: Mapping[str, str]) -> int:
    """The input tokens held per use of a server tool, such that a tool's default uses of them
    leave room, in a hold's count, for a prompt of the context held for a conversation (a hold
    counts the prompt beside the results: 10**11 uses of 10,000 tokens, 10**15, refused every
    call with a web search, its prompt of a few tokens past the count)."""
    uses = whole_number(env, "TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES", SERVER_TOOL_MAX_USES, most=MAX_QUANTITY)
    tokens = whole_number(env, "TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS", SERVER_TOOL_RESULT_TOKENS,
                          most=MAX_QUANTITY)
    context = whole_number(env, "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS", CONTEXT_HOLD_TOKENS, most=MAX_QUANTITY)
    if uses * tokens + context > MAX_QUANTITY:
        raise SystemExit(f"TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES × TOKENTILL_GATEWAY_SERVER_TOOL_RESULT_TOKENS "
                         f"({uses:,} × {tokens:,}) must leave room for a prompt of "
                         f"TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS ({context:,}): together at most {MAX_QUANTITY:,}, "
                         "the tokens a hold counts")
    return tokens


def _ca_file(env: Mapping[str, str], name: str) -> str | None:
    """A readable file of PEM CA certificates, loaded as the gateway will load it at start."""
    path = env.get(name) or None
    if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise SystemExit(f"{name} must name a readable file, not {path!r}")
    if path is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            raise SystemExit(f"{name} must name a file of PEM CA certificates; {path!r}: {exc.reason or exc}") \
                from None
    return path


def betas(env: Mapping[str, str], name: str, default: frozenset[str]) -> frozenset[str]:
    """The betas a call may carry: `name`'s comma-separated list in place of the default, `none`
    for none; unset or empty, the default."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() == "none":
        return frozenset()
    given = [item.strip() for item in raw.split(",")]
    if not all(item and item.isprintable() and " " not in item for item in given):
        raise SystemExit(f"{name} must be a comma-separated list of beta names (or none), not {raw!r}")
    return frozenset(given)


SERVICE_TIER_MODES = ("provider", "standard")


def service_tier_mode(raw: str, name: str) -> str:
    if raw not in SERVICE_TIER_MODES:
        raise SystemExit(f"{name} must be one of {', '.join(SERVICE_TIER_MODES)}, not {raw!r}")
    return raw


SETTLE_MODES = ("wait", "background")


def settle_mode(raw: str, name: str) -> str:
    if raw not in SETTLE_MODES:
        raise SystemExit(f"{name} must be one of {', '.join(SETTLE_MODES)}, not {raw!r}")
    return raw
