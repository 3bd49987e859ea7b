"""What a credit or debit note moves (rerating.note_money), over plain integers, worked by hand: the
invoice's corrections so far less the close's rounding of its amount due, rounded once half to even,
less what its notes before moved. Atomic units: 10^9 a yen, 10^7 a cent."""
from __future__ import annotations

import pytest

from wallets.core.rerating import note_money

YEN, CENT = 10**9, 10**7

# (decimals, net, the close's rounding, notes' totals before, what they moved, moved now), by hand:
CASES = {
    # postpaid 4.5 yen, due 4 (-0.5): v2 -1.5: round(-1.5 + 0.5) = -1; v3 +6: round(4.5 + 0.5) = 5,
    # 5 + 1 = 6; v4 -4.503: round(-0.003 + 0.5) = 0, 0 - 5 = -5 (owed 4, 3, 9, 4)
    "jpy-postpaid-v2": (0, -1_500_000_000, -YEN // 2, 0, 0, -YEN),
    "jpy-postpaid-v3": (0, 6 * YEN, -YEN // 2, -1_500_000_000, -YEN, 6 * YEN),
    "jpy-postpaid-v4": (0, -4_503_000_000, -YEN // 2, 4_500_000_000, 5 * YEN, -5 * YEN),
    # prepaid, nothing rounded at the close: round(-1.5) = -2; round(4.5) = 4, 4 + 2 = 6;
    # round(-0.003) = 0, 0 - 4 = -4
    "jpy-prepaid-v2": (0, -1_500_000_000, 0, 0, 0, -2 * YEN),
    "jpy-prepaid-v3": (0, 6 * YEN, 0, -1_500_000_000, -2 * YEN, 6 * YEN),
    "jpy-prepaid-v4": (0, -4_503_000_000, 0, 4_500_000_000, 4 * YEN, -4 * YEN),
    # $0.075, due $0.08 (+$0.005): -$0.0225: round(-$0.0275) = -$0.03
    "usd-postpaid": (2, -22_500_000, CENT // 2, 0, 0, -3 * CENT),
    # after a note of before notes were rounded (-1.5 yen moved exact, 2.5 owed): +6 moves
    # round(4.5 + 0.5) = 5, 5 + 1.5 = 6.5 (9 owed, whole again); -0.1 would move round(-1.6 + 0.5) =
    # -1, -1 + 1.5 = +0.5, against a credit note's sign: 0 (the next note catches up)
    "after-an-exact-note": (0, 6 * YEN, -YEN // 2, -1_500_000_000, -1_500_000_000, 6_500_000_000),
    "after-an-exact-note-against-its-sign": (0, -YEN // 10, -YEN // 2, -1_500_000_000, -1_500_000_000, 0),
}


@pytest.mark.parametrize(("decimals", "net", "rounding", "totals", "moved", "expected"), CASES.values(),
                         ids=list(CASES))
def test_a_note_moves_the_running_total_rounded_once_less_what_the_notes_before_moved(
        decimals, net, rounding, totals, moved, expected) -> None:
    assert note_money(net, decimals, rounding, totals, moved) == expected
