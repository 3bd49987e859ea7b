"""What rating counts: the token types (and other billable units) of a price book, each with
the quantity one price covers, its fallback, and what it was before price book format 2.

Every type is a disjoint count: an audio input token is counted once, as ``input_audio``, never
also as ``input``. Format 1 books (the original format) know the first ten types; a format 2 book
knows them all. Usage of a type a format 1 book does not know is rated as its ``legacy`` type
(audio input tokens as ``input``, a one-hour cache write as ``cache_write``, as before); per-call
tool charges, which have none, are not billed by a format 1 book (they never were), and its other
units without one are unpriced there (``pricing.lines.call_tokens``); audio and
image tokens (in, cached and out) are rated as ``audio`` and ``image`` where the book has a rule
of that type for the call (``pricing.lines.call_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TOKENS = 1_000_000


@dataclass(frozen=True, slots=True)
class Kind:
    """One billable unit: ``per`` units per price, the canonical usage field that reports it,
    its fallbacks (tried in order when no rule prices it), its format 1 type, whether it counts
    toward the prompt size that selects a prompt-size tier, and its name on an invoice line."""

    name: str
    per: int
    field: str
    fallbacks: tuple[str, ...] = ()
    legacy: str | None = None
    prompt: bool = False
    label: str = ""


_KINDS = (
    # format 1
    # an embeddings model's input is what a book prices as its `embedding` tokens
    Kind("input", TOKENS, "input_tokens", ("embedding",), prompt=True, legacy="input", label="input"),
    Kind("cached_input", TOKENS, "cached_input_tokens", ("input",), "cached_input", True, "cached input"),
    Kind("cache_write", TOKENS, "cache_write_tokens", ("input",), "cache_write", True, "cache write"),
    Kind("output", TOKENS, "output_tokens", legacy="output", label="output"),
    Kind("reasoning", TOKENS, "reasoning_tokens", ("output",), "reasoning", label="reasoning"),
    # tokens the caller counts apart from its input (tool definitions and results), sent as tool_tokens
    Kind("tool", TOKENS, "tool_tokens", ("input",), "tool", True, "tool"),
    Kind("embedding", TOKENS, "embedding_tokens", legacy="embedding", label="embedding"),
    Kind("image", TOKENS, "image_tokens", legacy="image", label="image"),
    Kind("audio", TOKENS, "audio_tokens", legacy="audio", label="audio"),
    Kind("request", 1, "requests", legacy="request", label="request"),
    # format 2: cache write durations, modalities in and out (cached too), per-call tools, other units
    Kind("cache_write_1h", TOKENS, "cache_write_1h_tokens", ("cache_write", "input"), "cache_write", True,
         "cache write (1 hour)"),
    # a modality falls back to the format 1 type of its modality (one price for audio or image
    # tokens in and out, API.md) before the type that contains it
    Kind("input_audio", TOKENS, "input_audio_tokens", ("audio", "input"), "input", True, "audio input"),
    Kind("input_image", TOKENS, "input_image_tokens", ("image", "input"), "input", True, "image input"),
    Kind("input_video", TOKENS, "input_video_tokens", ("input",), "input", True, "video input"),
    Kind("cached_input_audio", TOKENS, "cached_input_audio_tokens", ("cached_input", "input_audio", "audio", "input"),
         "cached_input", True, "cached audio input"),
    Kind("cached_input_image", TOKENS, "cached_input_image_tokens", ("cached_input", "input_image", "image", "input"),
         "cached_input", True, "cached image input"),
    Kind("cached_input_video", TOKENS, "cached_input_video_tokens", ("cached_input", "input_video", "input"),
         "cached_input", True, "cached video input"),
    Kind("output_audio", TOKENS, "output_audio_tokens", ("audio", "output"), "output", label="audio output"),
    Kind("output_image", TOKENS, "output_image_tokens", ("image", "output"), "output", label="image output"),
    Kind("output_video", TOKENS, "output_video_tokens", ("output",), "output", label="video output"),
    Kind("citation", TOKENS, "citation_tokens", ("output",), "output", label="citation"),
    Kind("web_search", 1, "web_search_calls", label="web search"),
    Kind("file_search", 1, "file_search_calls", label="file search"),
    Kind("code_execution", 1, "code_execution_calls", label="code execution"),
    Kind("input_characters", TOKENS, "input_characters", label="input characters"),
    Kind("input_message", 1, "input_messages", label="input message"),
    Kind("audio_seconds", 3600, "audio_seconds", label="audio (per hour)"),
    Kind("input_audio_seconds", 3600, "input_audio_seconds", ("audio_seconds",), label="audio input (per hour)"),
    Kind("document_page", 1, "document_pages", label="document page"),
    Kind("annotated_document_page", 1, "annotated_document_pages", ("document_page",),
         label="annotated document page"),
)
KINDS: dict[str, Kind] = {k.name: k for k in _KINDS}
FORMAT_1_TYPES: tuple[str, ...] = tuple(k.name for k in _KINDS[:10])
TOKEN_TYPES: tuple[str, ...] = tuple(KINDS)
PER_UNITS: dict[str, int] = {k.name: k.per for k in _KINDS}
PROMPT_TYPES: frozenset[str] = frozenset(k.name for k in _KINDS if k.prompt)
# what a call's output budget (max_output_tokens) may be spent on: output and the types inside it
OUTPUT_TYPES: tuple[str, ...] = tuple(k.name for k in _KINDS if k.name == "output" or "output" in k.fallbacks)
FIELD_OF: dict[str, str] = {k.name: k.field for k in _KINDS}
TYPE_OF_FIELD: dict[str, str] = {k.field: k.name for k in _KINDS}
FORMATS = (1, 2)
# per-call tool charges, never billed by a format 1 book (it has no type for them): its other
# units without a format 1 type (seconds, characters, pages, messages) are unpriced there
TOOL_CALLS: frozenset[str] = frozenset(k.name for k in _KINDS if k.field.endswith("_calls"))
# types that count no tokens (a request, a tool call, a page, a message, a second of audio, a
# character): a rule of one for every model prices those units, not any model's tokens, so it does
# not make every model one the book prices (pricing.books.PriceVersion.prices_model; under
# `unpriced: zero` a misspelt model's tokens were free), and a contract price per 1M tokens
# without a token type does not price them (pricing.overrides.ContractPrice.rank)
NOT_TOKENS: frozenset[str] = frozenset(k.name for k in _KINDS if not k.field.endswith("_tokens"))
# the format 1 types of a modality: a format 1 book with a rule of one rates that modality's
# tokens by it (input, cached input and output alike), else as their legacy type
MODALITY_TYPES = frozenset({"audio", "image"})


def legacy_counts(counts: dict[str, int], modality: Callable[[str], str | None] = lambda name: None) -> dict[str, int]:
    """Counts as a format 1 book rates them: each format 2 type folded into its format 1 type, or
    into the modality type (``audio``, ``image``) ``modality`` names for it."""
    out: dict[str, int] = {}
    for name, quantity in counts.items():
        legacy = modality(name) or KINDS[name].legacy
        if legacy is not None and quantity:
            out[legacy] = out.get(legacy, 0) + quantity
    return out


def line_label(token_type: str | None, note: str | None = None) -> str:
    """An invoice line's name: "input", "input (long context)", "web search", ..."""
    if token_type is None:
        return note or ""
    label = KINDS[token_type].label if token_type in KINDS else token_type
    return f"{label} ({note})" if note else label
