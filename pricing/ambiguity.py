"""Rules that precedence cannot order, found in near-linear time.

Two rules of a version tie when they have the same token type, the same model specificity
(both without a model, both naming one exact model, or both patterns that may overlap), the same
number of ``match`` dimensions, no dimension they share has two different values and, when both
have ``hours`` (which count as a dimension), their daily windows share a minute: some usage
then matches both and neither wins, unless a rule of the same model and type matches exactly
the dimensions of both (it has more, so it wins wherever both match). Comparing every pair of
rules made this O(n²) (3,000 rules took 3 s, 10,000 rules 25 s). Instead, rules are grouped by
token type, model specificity and number of dimensions, then by model (or pattern) and by their
set of dimension names, and two sets are joined on the values of the names they share through a hash. The cost is about
``n × s`` rule visits for ``s`` distinct sets of dimension names in a group, plus ``p²`` pattern
comparisons for ``p`` distinct patterns, plus the ties found; reporting stops at ``limit`` ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pricing.errors import field_error
from pricing.rule_fields import hours_overlap, overlapping

if TYPE_CHECKING:
    from pricing.books import Rule

PATTERN_CHARS = "*?["
HOURS = "@hours"  # a rule's daily window among its keyed dimensions (pricing.books.Rule.keyed_match)
MAX_REPORTED_TIES = 100


def is_pattern(model: str) -> bool:
    """Whether a rule's model is a glob pattern rather than an exact model name."""
    return any(c in model for c in PATTERN_CHARS)


def literal_ends(pattern: str) -> tuple[str, str]:
    """The literal prefix and suffix of a glob: every name it matches starts and ends with them."""
    cut = min((pattern.index(c) for c in PATTERN_CHARS if c in pattern), default=len(pattern))
    end = max((pattern.rindex(c) for c in "*?]" if c in pattern), default=-1)
    return pattern[:cut], pattern[end + 1:]


def _ends_may_overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    (pa, sa), (pb, sb) = a, b
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def patterns_may_overlap(a: str, b: str) -> bool:
    """Conservative test: False only when no model name can match both globs."""
    return _ends_may_overlap(literal_ends(a), literal_ends(b))


def _typed(pairs: Sequence[tuple[str, object]]) -> frozenset[tuple[str, type, object]]:
    return frozenset((k, type(v), v) for k, v in pairs)  # "1", 1 and True are three values


class _Enough(Exception):
    """Raised once `limit` ties are found: the rest are not looked for."""


@dataclass(slots=True)
class TieCheck:
    """Ties as (earlier index, later index), at most `limit` of them, and the work it took
    (rules visited and patterns compared), which tests bound to show the check is near-linear."""

    limit: int = MAX_REPORTED_TIES
    pairs: list[tuple[int, int]] = field(default_factory=list)
    truncated: bool = False
    work: int = 0
    joins: set[tuple[object, ...]] = field(default_factory=set)  # rules that outrank a pair they cover
    rules: Sequence[Rule] = ()

    def add(self, i: int, j: int) -> None:
        a, b = self.rules[i], self.rules[j]
        if a.hours is not None and b.hours is not None:
            if not hours_overlap(a.hours, b.hours):
                return  # two windows no minute is in: never both in force
            if a.model == b.model and a.match == b.match and a.hours != b.hours:
                return  # pricing.rule_fields.window_errors names these: overlapping hours
        both = _typed((*a.keyed_match, *b.keyed_match))
        if a.model == b.model and len(both) > len(a.keyed_match) and (a.token_type, a.model, both) in self.joins:
            return  # a rule of the same model matching both rules' dimensions wins wherever both match
        if len(self.pairs) == self.limit:
            raise _Enough
        self.pairs.append((min(i, j), max(i, j)))


def find_ties(rules: Sequence[Rule], limit: int = MAX_REPORTED_TIES) -> TieCheck:
    """The pairs of rules that can tie for one usage (see the module's docstring)."""
    check = TieCheck(limit, rules=rules)
    check.joins = {(r.token_type, r.model, _typed(r.keyed_match)) for r in rules if len(r.keyed_match) > 1}
    groups: dict[tuple[str, int, int], dict[str | None, list[int]]] = {}
    for i, rule in enumerate(rules):
        kind = 0 if rule.model is None else 1 if is_pattern(rule.model) else 2
        groups.setdefault((rule.token_type, kind, len(rule.keyed_match)), {}).setdefault(rule.model, []).append(i)
    values = [dict(rule.keyed_match) for rule in rules]  # a window of hours counts as a dimension
    try:
        for (_, kind, _), by_model in groups.items():
            if kind == 1:
                _pattern_ties(values, by_model, check)
            else:
                for members in by_model.values():
                    _dimension_ties(values, members, None, check)
    except _Enough:
        check.truncated = True
    check.pairs.sort()
    return check


def _pattern_ties(values: list[dict[str, object]], by_pattern: dict[str | None, list[int]],
                  check: TieCheck) -> None:
    patterns = list(by_pattern)
    ends = [literal_ends(p or "") for p in patterns]
    for a, pa in enumerate(patterns):
        _dimension_ties(values, by_pattern[pa], None, check)
        for b in range(a + 1, len(patterns)):
            check.work += 1
            if _ends_may_overlap(ends[a], ends[b]):
                _dimension_ties(values, by_pattern[pa], by_pattern[patterns[b]], check)


def _by_names(values: list[dict[str, object]], members: list[int]) -> dict[tuple[str, ...], list[int]]:
    out: dict[tuple[str, ...], list[int]] = {}
    for i in members:
        out.setdefault(tuple(values[i]), []).append(i)  # match is sorted: one tuple per name set
    return out


def _key(dims: dict[str, object], names: tuple[str, ...]) -> tuple[object, ...]:
    # "1", 1 and True never match each other; two windows of hours are not equal or different
    # values but overlapping or not, which TieCheck.add decides
    return tuple((type(dims[n]), dims[n]) for n in names if n != HOURS)


def _dimension_ties(values: list[dict[str, object]], left: list[int], right: list[int] | None,
                    check: TieCheck) -> None:
    """Ties between `left` and `right` (or within `left`), rules of one model and dimension count."""
    lsets = _by_names(values, left)
    rsets = lsets if right is None else _by_names(values, right)
    for lnames, lmembers in lsets.items():
        for rnames, rmembers in rsets.items():
            if right is None and rnames < lnames:
                continue  # within one list: each pair of name sets once
            shared = tuple(n for n in lnames if n in rnames)
            index: dict[tuple[object, ...], list[int]] = {}
            for j in rmembers:
                index.setdefault(_key(values[j], shared), []).append(j)
            check.work += len(rmembers)
            if HOURS in shared:  # both sides have hours: pairs of windows that overlap, by a sweep
                _window_ties(values, lmembers, index, shared, right is None and lnames == rnames, check)
                continue
            for i in lmembers:
                check.work += 1
                for j in index.get(_key(values[i], shared), ()):
                    check.work += 1
                    if right is None and lnames == rnames and j <= i:
                        continue
                    check.add(i, j)


def _window_ties(values: list[dict[str, object]], lmembers: list[int], index: dict[tuple[object, ...], list[int]],
                 shared: tuple[str, ...], same: bool, check: TieCheck) -> None:
    """Ties between rules with hours that agree on their other shared dimensions: those whose
    windows overlap (pricing.rule_fields.overlapping), without comparing every pair."""
    lindex: dict[tuple[object, ...], list[int]] = {}
    for i in lmembers:
        lindex.setdefault(_key(values[i], shared), []).append(i)
    check.work += len(lmembers)
    for key, left in lindex.items():
        right = index.get(key)
        if not right:
            continue
        windows = [(i, check.rules[i].hours) for i in left]
        pairs = overlapping(windows) if same else overlapping(windows, [(j, check.rules[j].hours) for j in right])
        check.work += len(pairs) + (0 if same else len(right))
        for i, j in pairs:
            check.add(i, j)


def ambiguity_errors(rules: Sequence[Rule], limit: int = MAX_REPORTED_TIES) -> list[dict[str, str]]:
    """One error per pair of rules that precedence cannot order for some possible usage."""
    check = find_ties(rules, limit)
    errors = [field_error(
        f"rules[{j}]",
        f"ambiguous with rule {rules[i].id!r}: same token type, model specificity and "
        "number of match dimensions, and both can match one usage",
    ) for i, j in check.pairs]
    if check.truncated:
        errors.append(field_error("rules", f"more than {limit} pairs of ambiguous rules; the first "
                                           f"{limit} found are listed"))
    return errors
