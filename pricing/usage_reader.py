"""Reading a provider's usage object (pricing.normalize): the reader that collects each refused
count under the path the provider sent it at, and the disjoint canonical counts it makes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pricing.errors import InvalidUsageError, field_error
from pricing.units import FIELD_OF, TYPE_OF_FIELD
from pricing.usage import check_count

# the cache writes an Anthropic usage gives in all but not by TTL (NormalizedUsage.unsplit_cache_writes)
UNSPLIT = "cache_writes_unsplit"
CANONICAL_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
TOKEN_TYPE_OF = {f: TYPE_OF_FIELD[f] for f in CANONICAL_FIELDS}  # each canonical field's rating type
MAX_SERVICE_TIER = 40


@dataclass(frozen=True, slots=True)
class NormalizedUsage:
    """Disjoint canonical counts, where they came from, format 2 counts (``extra``, by rating
    type), the service tier the provider reported, and informational subsets."""

    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    source: str = "canonical"
    details: tuple[tuple[str, int], ...] = ()
    extra: tuple[tuple[str, int], ...] = ()
    service_tier: str | None = None
    inference_geo: str | None = None  # Anthropic: where the call ran ("us"), which prices it as the tier does

    def as_usage_fields(self) -> dict[str, Any]:
        """The canonical ``usage`` object of the API (format 2 fields and the tier when given)."""
        fields: dict[str, Any] = {name: getattr(self, name) for name in CANONICAL_FIELDS}
        fields.update((FIELD_OF[t], v) for t, v in self.extra)
        if self.service_tier is not None:
            fields["service_tier"] = self.service_tier
        if self.inference_geo is not None:
            fields["inference_geo"] = self.inference_geo
        return fields

    def token_counts(self) -> dict[str, int]:
        """Counts keyed by rating token type (input, cached_input, ...), zeros omitted."""
        counts = {TOKEN_TYPE_OF[n]: getattr(self, n) for n in CANONICAL_FIELDS}
        counts.update(self.extra)
        return {t: v for t, v in counts.items() if v}

    @property
    def unsplit_cache_writes(self) -> int:
        """Cache writes the usage counts in all but not by TTL (Anthropic's), taken as 5-minute ones."""
        return dict(self.details).get(UNSPLIT, 0)

    def dimensions(self) -> dict[str, str]:
        """What the usage itself says about the price: its service tier, where it ran."""
        return {
            name: value
            for name, value in (("service_tier", self.service_tier), ("inference_geo", self.inference_geo))
            if value is not None
        }


class UsageReader:
    """Reads integer fields of a provider object, collecting every error with its path."""

    def __init__(self, obj: object, kind: str) -> None:
        if not isinstance(obj, Mapping):
            raise InvalidUsageError(kind, "must be an object")
        self.obj, self.kind = obj, kind
        self.errors: list[dict[str, str]] = []

    def count(self, *path: str, required: bool = False) -> int:
        value: Any = self.obj
        for i, key in enumerate(path):
            if value is None:
                break
            if not isinstance(value, Mapping):
                self.errors.append(field_error(".".join(path[:i]), "must be an object"))
                return 0
            value = value.get(key)
        if value is None:
            if required:
                self.errors.append(field_error(".".join(path), "is required"))
            return 0
        return check_count(value, ".".join(path), self.errors)

    def tier(self, *path: str) -> str | None:
        """The service tier the provider reported, if any (a short string)."""
        value: Any = self.obj
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            return None
        self.check(
            isinstance(value, str) and 0 < len(value) <= MAX_SERVICE_TIER,
            ".".join(path),
            f"must be a string of 1 to {MAX_SERVICE_TIER} characters",
        )
        return value if isinstance(value, str) else None

    def by_modality(self, name: str) -> dict[str, int]:
        """Gemini's ``[{"modality": "AUDIO", "tokenCount": n}, ...]`` as counts by lower-case
        modality (DOCUMENT counted as image)."""
        items = self.obj.get(name)
        out: dict[str, int] = {}
        if items is None:
            return out
        if not isinstance(items, list):
            self.check(False, name, "must be a list")
            return out
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("modality"), str):
                self.check(False, f"{name}[{i}]", "must be an object with a modality")
                continue
            modality = item["modality"].lower()
            modality = "image" if modality == "document" else modality
            count = check_count(item.get("tokenCount", 0), f"{name}[{i}].tokenCount", self.errors)
            out[modality] = out.get(modality, 0) + count
        return out

    def part(self, whole: int, part: int, name: str, whole_name: str, *also: str) -> int:
        """``part``, checked to be within ``whole``, unless ``whole`` is refused already: a detail
        not given reads 0, each 'exceeded' a refused total (or ``also``, in it), naming fields never sent."""
        self.check(part <= whole or self.refused(name, whole_name, *also), name, f"exceeds {whole_name}")
        return part

    def within(self, whole: int, parts: int, name: str, message: str, *counted: str) -> None:
        """A sum of details (`parts`) checked against their total, named by the details' field as
        the provider sent it (was: by the rating type their difference makes, "input_audio"),
        unless that field, a field under it or one of `counted` (their total, the counts summed)
        is refused already."""
        self.check(parts <= whole or any(self._under(e["field"], (name, *counted)) for e in self.errors), name, message)

    @staticmethod
    def _under(field: str, names: tuple[str, ...]) -> bool:
        return any(field == n or field.startswith((f"{n}.", f"{n}[")) for n in names)

    def refused(self, *names: str) -> bool:
        """Whether any of the fields `names` is refused already (a sum of them says nothing more)."""
        return any(e["field"] in names for e in self.errors)

    def check(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.errors.append(field_error(name, message))

    def done(self) -> None:
        if self.errors:
            raise InvalidUsageError(self.errors)


def normalized(
    r: UsageReader,
    source: str,
    counts: dict[str, int],
    tier: str | None,
    details: Mapping[str, int] | None = None,
    geo: str | None = None,
) -> NormalizedUsage:
    """Build the normalized usage once every count is read and checked non-negative (each
    normalizer checks its details within their totals, naming them: this names the usage object,
    never a rating type no provider sends)."""
    if not r.errors:
        r.check(all(value >= 0 for value in counts.values()), r.kind, "the subsets reported exceed their total")
    r.done()
    base = [counts.pop(t, 0) for t in ("input", "cached_input", "cache_write", "output", "reasoning")]
    extra = tuple((t, v) for t, v in counts.items() if v)
    kept = tuple(sorted((k, v) for k, v in (details or {}).items() if v))
    return NormalizedUsage(*base, source, kept, extra, tier, geo)
