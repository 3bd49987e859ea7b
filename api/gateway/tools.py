"""Anthropic's and OpenAI's tools: what they add to a call's input and to its bill that the body
does not show (pure: no I/O; api.gateway.calls counts the rest).

- a call with `tools` gets a system prompt of Anthropic's, of a size it documents per model and
  `tool_choice` (TOOL_USE_SYSTEM_PROMPT);
- the client tools Anthropic defines itself (bash, text editor, computer use) add a documented
  number of input tokens each (BUILT_IN_TOOLS), in place of their definitions' words;
- the server tools it runs inside the call (SERVER_TOOLS) add their results as input, and a web
  search its fee: held for each tool's `max_uses`, sent with the gateway's where it sets none;
- OpenAI's web and file search (a responses call's `web_search*`, `file_search` tools) run
  inside the call too: each search is billed per call (its `web_search_call`, `file_search_call`
  output items; the usage does not count them) with its results as input: held for the call's
  `max_tool_calls`, sent with the gateway's where it sets none (`openai_tools`); a chat call
  with `web_search_options` (its search models) searches once, billed per call
  (`openai_chat_search`);
- code execution is billed per container, which neither provider's usage reports: held and
  charged as `code_execution` units (`anthropic_containers`, `openai_tools`);
- a hosted MCP server of OpenAI's (`mcp`) lists its tools and answers its calls as input: held at
  the results allowance for its listing, and for each of `max_tool_calls` calls (`openai_tools`);
  one of Anthropic's MCP connector (`mcp_servers`), for its listing (`anthropic_mcp_servers`; its
  calls have no bound to hold for);
- a stored prompt (`prompt`) may bring per-call tools the body does not show: held as a web and a
  file search and a container (`template_tools`), or, when the book cannot price them, sent with
  `max_tool_calls: 0` so that none runs (Call.untooled, chosen in api.gateway.proxy);
- OpenAI's `image_generation` tool is billed at its image model's prices, which no usage
  reports, and Anthropic's advisor tool and `fallbacks` have other models serve (part of) the
  call, billed at their prices: refused (UnmeteredToolError, answered 422 unpriced_model), never
  given away nor charged at the call's model's prices (`openai_tools`, `anthropic_unmetered`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_COUNT = 10**12
# Anthropic's "Tool use system prompt token count" (platform.claude.com/docs/en/agents-and-tools/
# tool-use/overview, section Pricing), per model: (tool_choice auto or none, any or tool). Where
# the table's revisions gave one model two figures, the larger is kept (a hold must not be short).
# Longest prefix of the model's id wins; a model not listed counts TOOL_USE_SYSTEM_PROMPT_MOST.
TOOL_USE_SYSTEM_PROMPT: dict[str, tuple[int, int]] = {
    "claude-opus-4-8": (290, 410), "claude-opus-4-7": (675, 804), "claude-opus-4-6": (497, 589),
    "claude-opus-4-5": (496, 588), "claude-opus-4-1": (346, 315), "claude-opus-4": (346, 315),
    "claude-sonnet-5": (354, 474), "claude-sonnet-4-6": (497, 589), "claude-sonnet-4-5": (496, 588),
    "claude-sonnet-4": (346, 315), "claude-haiku-4-5": (496, 588), "claude-3-7-sonnet": (346, 313),
    "claude-3-5-sonnet": (346, 313), "claude-3-5-haiku": (264, 355), "claude-3-opus": (530, 281),
    "claude-3-sonnet": (159, 235), "claude-3-haiku": (264, 340),
}
TOOL_USE_SYSTEM_PROMPT_MOST = max(max(pair) for pair in TOOL_USE_SYSTEM_PROMPT.values())
# Anthropic's client tools, defined by Anthropic (its bash, text editor and computer use tool pages,
# section Pricing; platform.claude.com/docs/en/agents-and-tools/tool-use/): the input tokens one adds,
# by its `type`'s prefix, whatever the version. Computer use: 735 per tool (683 for computer_20241022:
# the larger is kept), and 466-499 tokens of system prompt once (the most is kept).
BUILT_IN_TOOLS = (("bash_", 245), ("text_editor_", 700), ("computer_", 735))
COMPUTER_USE_SYSTEM_PROMPT = 499
# Anthropic's server tools: (type prefix, the per-call unit its uses are billed as, None: no fee).
# A web search is $10 per 1,000 (usage.server_tool_use.web_search_requests); a web fetch costs its
# content's input tokens only. Code execution: see ANTHROPIC_CODE_EXECUTION.
SERVER_TOOLS = (("web_search_", "web_search"), ("web_fetch_", None))
# Anthropic's code execution (its code execution tool page, section Usage and pricing): billed by its
# container's time ($0.05 an hour per container, at least 5 minutes, past the organization's free
# hours), which its usage does not report (server_tool_use counts web searches and fetches only).
# A call runs in one container, which its answer names (`container`; a stream's message_delta):
# held and charged as one `code_execution` unit, the container's use, at the book's rule. Not
# billed in a call that has web_search_20260209 or web_fetch_20260209 (or a later version) too.
ANTHROPIC_CODE_EXECUTION = "code_execution_"
ANTHROPIC_CODE_EXECUTION_NAMES = frozenset({"code_execution", "bash_code_execution", "text_editor_code_execution"})
CODE_EXECUTION_FREE_WITH = (("web_search_", "20260209"), ("web_fetch_", "20260209"))
SERVER_TOOL_MAX_USES = 5  # a server tool without max_uses is sent with this many
SERVER_TOOL_RESULT_TOKENS = 10_000  # held per use for its results; a web fetch's content cap when it sets none


class CallError(Exception):
    """A call the gateway cannot meter: names the field (the caller's request is malformed)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class UnmeteredToolError(CallError):
    """A tool the provider bills in a way the gateway cannot meter: the call is refused as unpriced."""


def _typed(tool: Any, prefixes: tuple[tuple[str, Any], ...]) -> tuple[str, Any] | None:
    """The (prefix, value) of `prefixes` that a tool's `type` starts with, if any."""
    kind = tool.get("type") if isinstance(tool, Mapping) else None
    if isinstance(kind, str):
        for prefix, value in prefixes:
            if kind.startswith(prefix):
                return prefix, value
    return None


def without_built_in_tools(tools: list[Any]) -> tuple[list[Any], int]:
    """(the tools but Anthropic's client tools, the input tokens Anthropic documents for those)."""
    rest, tokens, computer = [], 0, False
    for tool in tools:
        built_in = _typed(tool, BUILT_IN_TOOLS)
        if built_in is None:
            rest.append(tool)
            continue
        tokens += built_in[1]
        computer = computer or built_in[0] == "computer_"
    return rest, tokens + (COMPUTER_USE_SYSTEM_PROMPT if computer else 0)


def _uses(tool: Mapping[str, Any], name: str, field: str = "tools.", least: int = 1) -> int | None:
    value = tool.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_COUNT:
        raise CallError(f"{field}{name}", f"must be a whole number, {least} or more")
    return value


def server_tools(body: dict[str, Any], max_uses: int,
                 result_tokens: int) -> tuple[tuple[tuple[str, int], ...], int, bool]:
    """(uses of per-call units, input tokens held for the results, whether the body changed) of
    Anthropic's server tools: a tool without max_uses (a web fetch without max_content_tokens) is
    given the gateway's, so what is held bounds what they may return."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return (), 0, False
    fees: dict[str, int] = {}
    held, changed, sent = 0, False, []
    for tool in tools:
        server = _typed(tool, SERVER_TOOLS)
        if server is None:
            sent.append(tool)
            continue
        tool, unit = dict(tool), server[1]
        uses = _uses(tool, "max_uses")
        if uses is None:
            tool["max_uses"], uses, changed = max_uses, max_uses, True
        per_use = result_tokens
        if server[0] == "web_fetch_":
            per_use = _uses(tool, "max_content_tokens") or 0
            if not per_use:
                tool["max_content_tokens"], per_use, changed = result_tokens, result_tokens, True
        if unit is not None:
            fees[unit] = fees.get(unit, 0) + uses
        held += uses * per_use
        sent.append(tool)
    if changed:
        body["tools"] = sent
    return tuple(sorted(fees.items())), held, changed


# Anthropic's ways of having another model serve (part of) a call, billed at that model's prices
# (reported only in usage.iterations, with the model): the gateway holds and charges the call's model.
ANTHROPIC_UNMETERED_TOOLS = (
    ("advisor_", "Anthropic's advisor tool runs another model, billed at that model's prices: the gateway "
                 "holds and charges the call's model alone, so it cannot meter it"),)
ANTHROPIC_FALLBACKS = ("a call with fallbacks may be served by another model, billed at that model's prices: the "
                       "gateway holds and charges the call's model alone, so it cannot meter it")


def anthropic_unmetered(body: Mapping[str, Any]) -> None:
    """UnmeteredToolError for a messages call with a tool of ANTHROPIC_UNMETERED_TOOLS or `fallbacks`."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        unmetered = _typed(tool, ANTHROPIC_UNMETERED_TOOLS)
        if unmetered is not None:
            raise UnmeteredToolError(f"tools: {tool['type']}", unmetered[1])
    if body.get("fallbacks"):
        raise UnmeteredToolError("fallbacks", ANTHROPIC_FALLBACKS)


def anthropic_mcp_servers(body: Mapping[str, Any]) -> int:
    """The MCP servers of a messages call (Anthropic's MCP connector), each of which adds its tools'
    definitions to the prompt."""
    servers = body.get("mcp_servers")
    return len(servers) if isinstance(servers, list) else 0


def anthropic_containers(body: Mapping[str, Any]) -> int:
    """The `code_execution` units a messages call is held and charged for its container: 1 with a
    code execution tool (none when a web search or fetch of CODE_EXECUTION_FREE_WITH's versions
    makes it free)."""
    tools = body.get("tools")
    kinds = [t.get("type") for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
    kinds = [kind for kind in kinds if isinstance(kind, str)]
    if not any(kind.startswith(ANTHROPIC_CODE_EXECUTION) for kind in kinds):
        return 0
    free = any(kind.startswith(prefix) and kind[len(prefix):] >= since
               for kind in kinds for prefix, since in CODE_EXECUTION_FREE_WITH)
    return 0 if free else 1


# OpenAI's built-in tools billed per call (responses): (type prefix, the per-call unit, its output
# item's type). A web search is from $10 per 1,000 (by model and tool version), a file search $2.50.
OPENAI_TOOLS = (("web_search", "web_search"), ("file_search", "file_search"))
OPENAI_TOOL_CALLS = {f"{unit}_call": unit for _, unit in OPENAI_TOOLS}
# OpenAI's containers (a code_interpreter tool's; a hosted shell's, `shell` in a container): billed
# per container by its memory limit when it is made, 4g, 16g and 64g at 4, 16 and 64 times the price
# of a 1g container (the default): counted in `code_execution` units of 1 GB. A container given by
# id was made, and billed, by an earlier call: not again.
OPENAI_CONTAINER_UNITS = {"1g": 1, "4g": 4, "16g": 16, "64g": 64}
OPENAI_CONTAINER_CALLS = frozenset({"code_interpreter_call", "shell_call"})
# OpenAI's tools billed in a way no usage reports, by type: why the gateway refuses them.
OPENAI_UNMETERED_TOOLS = {
    "image_generation": "OpenAI bills the images it makes at its image model's prices, by size and quality, "
                        "which the response's usage does not report: the gateway cannot meter it"}


def _container(tool: Any) -> tuple[int, str | None] | None:
    """(the `code_execution` units of the container an OpenAI tool makes, the id of one it reuses)
    for a tool that runs in a container of OpenAI's; None for any other tool. A container given by
    id was made, and billed, by an earlier call: 0 units."""
    if not isinstance(tool, Mapping) or tool.get("type") not in ("code_interpreter", "shell"):
        return None
    field = "container" if tool["type"] == "code_interpreter" else "environment"
    given = tool.get(field)
    if isinstance(given, str):  # a container made earlier, by id
        return 0, given
    kind = given.get("type") if isinstance(given, Mapping) else None
    if kind == "container_reference":
        ident = given.get("container_id")
        return 0, ident if isinstance(ident, str) else None
    if kind not in ("auto", "container_auto"):  # a shell on the caller's machine: no container of OpenAI's
        return None
    memory = given.get("memory_limit")
    if memory is None:
        return 1, None
    if memory not in OPENAI_CONTAINER_UNITS:
        raise CallError(f"tools.{field}.memory_limit", f"must be one of {', '.join(OPENAI_CONTAINER_UNITS)}")
    return OPENAI_CONTAINER_UNITS[memory], None


def openai_tools(body: dict[str, Any], max_uses: int,
                 result_tokens: int) -> tuple[tuple[tuple[str, int], ...], int, bool, int, tuple[str, ...]]:
    """(uses of per-call units, input tokens held for the results, whether the body changed, the
    `code_execution` units of a container it makes, the ids of those it reuses) of a responses
    call's built-in tools: its per-call tools (`web_search`, `web_search_preview`, `file_search`
    and their dated types) each held for `max_tool_calls`, the most built-in tool calls the call
    may make (given the gateway's when it sets none, so the hold is a bound), at its fee; the
    containers it makes (`code_interpreter`, a hosted `shell`) one session each at its units (one
    given by id, made earlier, none); and that many results, besides a hosted MCP server's (`mcp`)
    tool listing. A tool of OPENAI_UNMETERED_TOOLS is UnmeteredToolError."""
    tools = body.get("tools")
    tools = tools if isinstance(tools, list) else []
    kinds = [tool.get("type") for tool in tools if isinstance(tool, Mapping)]
    for kind in kinds:
        if kind in OPENAI_UNMETERED_TOOLS:
            raise UnmeteredToolError(f"tools: {kind}", OPENAI_UNMETERED_TOOLS[kind])
    units = sorted({t[1] for t in map(lambda tool: _typed(tool, OPENAI_TOOLS), tools) if t is not None})
    found = [c for c in map(_container, tools) if c is not None]
    made, reused = [n for n, _ in found if n], tuple(ident for _, ident in found if ident is not None)
    listings = kinds.count("mcp")
    if not units and not found and not listings:
        return (), 0, False, 0, ()
    uses, changed = _uses(body, "max_tool_calls", "", 0), False
    if uses is None:
        body["max_tool_calls"], uses, changed = max_uses, max_uses, True
    fees = [(unit, uses) for unit in units if uses] + ([("code_execution", sum(made))] if made else [])
    return tuple(sorted(fees)), (uses + listings) * result_tokens, changed, max(made, default=0), reused


# The per-call tools a stored prompt (`prompt: {id}`) may bring to a responses call, unseen in its body.
TEMPLATE_TOOL_UNITS = ("web_search", "file_search")


def template_tools(body: dict[str, Any], uses: tuple[tuple[str, int], ...], results: int, containers: int,
                   max_uses: int, result_tokens: int) -> tuple[tuple[tuple[str, int], ...], int, bool, int]:
    """(uses of per-call units, results held, whether the body changed, container units) of a
    responses call with a stored prompt, whose tools the body does not show: held as a call with
    a web and a file search (for `max_tool_calls`, given the gateway's when it sets none) and a
    container of the default size (1 GB: 1 unit), besides those the body shows; the answer's items
    are charged as any call's. With `max_tool_calls` 0 OpenAI runs no built-in tool: none held."""
    calls, changed = _uses(body, "max_tool_calls", "", 0), False
    if calls == 0:
        return uses, results, False, containers
    if calls is None:
        body["max_tool_calls"], calls, changed = max_uses, max_uses, True
    held = dict(uses)
    for unit in TEMPLATE_TOOL_UNITS:
        held[unit] = max(held.get(unit, 0), calls)
    containers = max(containers, 1)
    held["code_execution"] = max(held.get("code_execution", 0), containers)
    return tuple(sorted(held.items())), max(results, calls * result_tokens), changed, containers


# OpenAI's chat search models (gpt-4o-search-preview, gpt-4o-mini-search-preview, gpt-5-search-api), by a
# part of their ids: they search the web before every answer, with or without web_search_options.
CHAT_SEARCH_MODELS = ("-search-preview", "-search-api")


def openai_chat_search(body: Mapping[str, Any], result_tokens: int) -> tuple[tuple[tuple[str, int], ...], int]:
    """(uses of per-call units, input tokens held for the results) of a chat call with
    `web_search_options`, or to one of OpenAI's search models (CHAT_SEARCH_MODELS), which search
    before every answer, the options optional: once per call, billed per call."""
    model = body.get("model")
    searches = isinstance(model, str) and any(name in model for name in CHAT_SEARCH_MODELS)
    if not searches and not isinstance(body.get("web_search_options"), Mapping):
        return (), 0
    return (("web_search", 1),), result_tokens


def tool_use_system_prompt(body: Mapping[str, Any]) -> int:
    """The system prompt Anthropic adds to a call with tools (none without tools)."""
    model, tools = body["model"], body.get("tools")
    if not isinstance(tools, list) or not tools:
        return 0
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    prefixes = [p for p in TOOL_USE_SYSTEM_PROMPT if model.startswith(p)]
    if not prefixes:
        return TOOL_USE_SYSTEM_PROMPT_MOST
    auto, forced = TOOL_USE_SYSTEM_PROMPT[max(prefixes, key=len)]
    return forced if kind in ("any", "tool") else auto
