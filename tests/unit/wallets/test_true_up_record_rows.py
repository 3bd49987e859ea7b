"""A true-up's record of what it gave back of each charge (true_up_charges, migration 0068) goes to
the batch's writing statement as one row of arrays per true-up, not a JSON record per charge: a
close of a customer with 100,000 charges on a volume rule sent 14.4 MB of JSON (0.3-0.7 s to build
and dump in Python, 0.5-1.0 s for PostgreSQL to parse, under the lane's lock) where the arrays are
0.8 MB."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from wallets import store
from wallets.batch import Batch
from wallets.core import money_back
from wallets.core.decision import TrueUpChargesGiven

NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def test_a_true_ups_record_is_one_row_of_arrays_for_the_writing_statement():
    # the close of November gave back 0.30 of charge 5 and 0.20 of charge 9 under rule a-in (in
    # atomic units), and kept rule call with nothing given back (its row without a charge)
    batch = Batch(NOW, store.Loaded({}, {}, {}))
    effect = TrueUpChargesGiven("cust", "2026-11", None,
                                (("a-in", 5, 300_000_000), ("a-in", 9, 200_000_000), ("call", None, 0)))

    batch._true_up_charges_given(effect, None)

    assert batch.rows["true_up_charges"] == [{
        "customer_id": "cust", "period": "2026-11", "rerate_id": None, "created_at": NOW,
        "rules": ["a-in", "a-in", "call"], "charges": [5, 9, None], "units": [300_000_000, 200_000_000, 0]}]
    token = store.LANE.set(3)
    try:
        sql, params = store.write_statement(batch.rows)
    finally:
        store.LANE.reset(token)
    assert "unnest(r.rules, r.charges, r.units)" in sql
    assert json.loads(params[0])[0]["charges"] == [5, 9, None]


def test_a_true_ups_payers_are_one_row_of_arrays_beside_its_record():
    # of charge 5's 0.30 back, 0.20 went to lot a and 0.10 to none of its payers; of charge 9's
    # 0.20, all to the receivable
    batch = Batch(NOW, store.Loaded({}, {}, {}))
    effect = TrueUpChargesGiven("cust", "2026-11", "rr1", (("a-in", 5, 300_000_000), ("a-in", 9, 200_000_000)),
                                ((5, "lot:a", 200_000_000), (5, None, 100_000_000), (9, "rec", 200_000_000)))

    batch._true_up_charges_given(effect, None)

    assert batch.rows["true_up_payers"] == [{
        "customer_id": "cust", "period": "2026-11", "rerate_id": "rr1",
        "charges": [5, 5, 9], "payers": ["lot:a", None, "rec"], "units": [200_000_000, 100_000_000, 200_000_000]}]
    token = store.LANE.set(3)
    try:
        sql, _ = store.write_statement(batch.rows)
    finally:
        store.LANE.reset(token)
    assert "unnest(r.charges, r.payers, r.units)" in sql


def test_payer_rows_sum_to_each_charge_s_part_over_its_rules():
    # charge 5: rule a 0.30, rule b 0.10 (0.40), of which lot x got 0.25 and the receivable 0.05:
    # 0.40 - 0.30 = 0.10 to none; charge 9: rule a -0.20, all taken back from lot y
    parts = {"a": {5: 30, 9: -20}, "b": {5: 10}}
    placed = {(5, "x"): 25, (5, "rec"): 5, (9, "y"): -20, (9, "z"): 0}
    assert money_back.payer_rows(parts, placed) == ((5, "rec", 5), (5, "x", 25), (5, None, 10), (9, "y", -20))
