"""A token budget made part-way through its window sums its closed calls' tokens in the database
(budget_seeding._TOKENS_OF_CHARGE, named by _token_type): it must count what rerating.charged_tokens
counts of the same charges, read back from the same rows, for any usage and lines a charge stores
(canonical usage of any form's fields, zeros, nulls, a tier; usage lines with or without a token
type, quantities as numbers or digit strings; charges stored before canonical usage was kept), and
for values no form takes (a float, a string, a boolean count), which both leave out."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.units import TYPE_OF_FIELD
from wallets import store
from wallets.budget_seeding import _TOKENS_OF_CHARGE, _token_type
from wallets.core.rerating import charged_tokens

_FIELDS = sorted(TYPE_OF_FIELD)  # requests among them: the per-request fee, left out
_TYPES = sorted(TYPE_OF_FIELD.values())
_count = st.one_of(st.integers(0, 10**12), st.just(0))
_odd = st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False), st.booleans(), st.integers(0, 99).map(str))
canonical = st.dictionaries(st.one_of(st.sampled_from(_FIELDS), st.just("service_tier"), st.just("unknown_tokens")),
                            st.one_of(_count, _count, _odd), max_size=6)
line = st.fixed_dictionaries({
    "kind": st.sampled_from(["usage", "usage", "free_allowance", "adjustment", "volume_true_up"]),
    "token_type": st.one_of(st.sampled_from(_TYPES), st.none(), st.just("")),
    "quantity": st.one_of(_count, _count.map(str)),
    "amount_units": st.integers(-10**6, 10**6)})
usage = st.one_of(
    st.fixed_dictionaries({"source": st.sampled_from(["usage", "openai_usage", "anthropic_usage"]),
                           "canonical": canonical}),
    st.fixed_dictionaries({"source": st.just("usage")}),  # stored before canonical usage was kept
    st.fixed_dictionaries({"canonical": st.none()}),
    st.none())
charge = st.fixed_dictionaries({"usage": usage, "lines": st.lists(line, max_size=5)})


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(charges=st.lists(charge, min_size=1, max_size=6))
def test_the_database_sums_what_charged_tokens_counts_of_the_same_charges(loop_db, charges: list[dict[str, Any]]):
    loop, db = loop_db

    async def run() -> tuple[dict[str, int], dict[str, int]]:
        async def read(conn):
            rows = (await conn.exec_driver_sql(
                "SELECT x.usage, x.lines FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(usage jsonb, lines jsonb)",
                {"rows": store.dumps(charges)})).all()
            summed = (await conn.exec_driver_sql(
                f"SELECT t.field, t.name, sum(t.n) FROM jsonb_to_recordset(%(rows)s::jsonb) "
                f"AS x(usage jsonb, lines jsonb) {_TOKENS_OF_CHARGE} GROUP BY 1, 2",
                {"rows": store.dumps(charges)})).all()
            return rows, summed

        rows, summed = await db.read(read)
        want: dict[str, int] = {}
        for stored_usage, stored_lines in rows:  # as each call was read back before, one by one
            for token_type, n in charged_tokens(stored_usage, stored_lines).items():
                want[token_type] = want.get(token_type, 0) + n
        got: dict[str, int] = {}
        for field, name, n in summed:
            token_type = _token_type(field, name)
            if token_type is not None:
                got[token_type] = got.get(token_type, 0) + int(n)
        return _nonzero(got), _nonzero(want)

    got, want = loop.run_until_complete(run())
    assert got == want, charges


def test_a_hand_worked_mix_sums_as_charged_tokens_counts_it(loop_db):
    """10 input + 3 cached of a canonical usage (its 1 request, a 2.5 and a "7" left out, its lines
    not read), and a charge without canonical usage whose lines count 4 + "6" input and 5 output (a
    request line, a line without a type and a free allowance's left out): input 20, cached 3, output 5."""
    loop, db = loop_db
    charges = [
        {"usage": {"canonical": {"input_tokens": 10, "cached_input_tokens": 3, "requests": 1, "output_tokens": 2.5,
                                 "reasoning_tokens": "7", "service_tier": "priority"}},
         "lines": [{"kind": "usage", "token_type": "input", "quantity": 99}]},
        {"usage": {"source": "usage"},
         "lines": [{"kind": "usage", "token_type": "input", "quantity": 4},
                   {"kind": "usage", "token_type": "input", "quantity": "6"},
                   {"kind": "usage", "token_type": "output", "quantity": 5},
                   {"kind": "usage", "token_type": "request", "quantity": 1},
                   {"kind": "usage", "token_type": None, "quantity": 8},
                   {"kind": "free_allowance", "token_type": "input", "quantity": 50}]}]

    async def read(conn):
        return (await conn.exec_driver_sql(
            f"SELECT t.field, t.name, sum(t.n) FROM jsonb_to_recordset(%(rows)s::jsonb) "
            f"AS x(usage jsonb, lines jsonb) {_TOKENS_OF_CHARGE} GROUP BY 1, 2", {"rows": store.dumps(charges)})).all()

    got: dict[str, int] = {}
    for field, name, n in loop.run_until_complete(db.read(read)):
        if (token_type := _token_type(field, name)) is not None:
            got[token_type] = got.get(token_type, 0) + int(n)
    assert _nonzero(got) == {"input": 20, "cached_input": 3, "output": 5}
    assert charged_tokens(*charges[0].values()) == {"input": 10, "cached_input": 3}
