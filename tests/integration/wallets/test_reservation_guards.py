"""Multi-capture (capture part of a hold, keep the rest held) as PostgreSQL guards it, whatever
writes the rows: raw SQL, as a buggy caller or an attacker holding the application's role would
write it (no trigger switched off), against a reservation the engine left `capturing` after one
capture, and against one settled by its final capture.

What it guards (migrations 0003, 0009, 0010, 0030): what the captures and releases take from a
hold never exceeds it (`captured + released <= amount`); the hold, its owner and its request never
change; running totals only move forward; the expiry moves only later, on an open reservation, and
alone (an extension); a closed reservation has accounted for its whole hold
and stays closed (only a late capture moves its charge total and count); a capture id is charged
once per reservation, and a reservation has one final charge; charge rows never change."""
from __future__ import annotations

import re

import psycopg
import pytest
from wallet_kit import Kit, amounts

# What refuses each attack: a CHECK of the reservations table (by name), the reservation guard's
# message, a unique index of the charges' partitions (by the end of its name), the append-only trigger.
HOLD = r"reservations_check"  # captured + released <= amount
CLOSED_AT = r"reservations_check1"  # open <=> closed_at IS NULL
ACCOUNTED = r"reservations_check2"  # closed => captured + released = amount
FORWARD = r"reservations: only status and running totals change, forward"
EXTENSION = r"reservation res_\w+: only an open reservation's expiry moves, later, and alone"
MACHINE = r"reservation res_\w+: settled -> \w+ is not allowed"
CAPTURE_ONCE = r"charges_l\d+_lane_reservation_id_capture_id_key"
ONE_FINAL = r"charges_l\d+_lane_reservation_id_idx"  # charges_one_final, on each partition
APPEND_ONLY = r"(UPDATE|DELETE) on charges_l\d+ is not allowed: the ledger is append-only"

CHARGE_COLUMNS = ("lane, customer_id, reservation_id, request_id, {seq}, {capture_id}, final, request_hash, model, "
                  "occurred_at, usage, dimensions, price_book, price_version, lines, charged, from_hold, from_lots, "
                  "from_receivable, released, entry_id")
# a copy of one of the reservation's charge rows under another seq (and, for the final, capture id)
COPY_CHARGE = ("INSERT INTO charges (" + CHARGE_COLUMNS.format(seq="seq", capture_id="capture_id") + ") SELECT "
               + CHARGE_COLUMNS.format(seq="seq + 100", capture_id="{capture_id}")
               + " FROM charges WHERE reservation_id = %(r)s AND {which}")
SET = "UPDATE reservations SET {} WHERE id = %(r)s"

ATTACKS_OPEN = {
    # captures past the hold, or a release of more than is left of it
    "capture_past_the_hold": (HOLD, SET.format("captured = amount + 1")),
    "release_past_what_is_left": (HOLD, SET.format("released = amount - captured + 1")),
    "capture_and_release_past_the_hold": (HOLD, SET.format("captured = captured + 1, released = amount - captured")),
    # totals backwards, or the hold moved under its captures
    "captured_backwards": (FORWARD, SET.format("captured = captured - 1")),
    "charged_backwards": (FORWARD, SET.format("charged = charged - 1")),
    "captures_backwards": (FORWARD, SET.format("captures = captures - 1")),
    "hold_grown": (FORWARD, SET.format("amount = amount + 1")),
    "hold_shrunk": (FORWARD, SET.format("amount = captured")),
    "other_owner": (FORWARD, SET.format("customer_id = %(other)s")),
    "shorter_life": (EXTENSION, SET.format("expires_at = expires_at - interval '1 second'")),
    "longer_life_and_a_capture": (EXTENSION, SET.format("expires_at = expires_at + interval '1 day', "
                                                        "captured = captured + 1, charged = charged + 1")),
    "longer_life_and_closed": (EXTENSION, SET.format("expires_at = expires_at + interval '1 day', "
                                                     "status = 'released', closed_at = now(), "
                                                     "released = amount - captured")),
    # closed without accounting for the whole hold, or closed and still open
    "settled_with_hold_left": (ACCOUNTED, SET.format("status = 'settled', closed_at = now()")),
    "released_with_hold_left": (ACCOUNTED, SET.format("status = 'released', closed_at = now()")),
    "closed_still_open": (CLOSED_AT, SET.format("status = 'settled', released = amount - captured")),
    "deleted": (FORWARD, "DELETE FROM reservations WHERE id = %(r)s"),
    # a capture id charged twice, a charge rewritten or removed
    "capture_id_twice": (CAPTURE_ONCE, COPY_CHARGE.format(capture_id="capture_id", which="capture_id = 'call-1'")),
    "charge_rewritten": (APPEND_ONLY, "UPDATE charges SET charged = charged + 1, from_receivable = from_receivable + 1 "
                                      "WHERE reservation_id = %(r)s"),
    "charge_deleted": (APPEND_ONLY, "DELETE FROM charges WHERE reservation_id = %(r)s"),
}

ATTACKS_CLOSED = {
    "reopened": (MACHINE, SET.format("status = 'capturing', closed_at = NULL")),
    "capture_after_close_from_the_hold": (FORWARD, SET.format("captured = captured + 1, released = released - 1")),
    "released_instead": (MACHINE, SET.format("status = 'released'")),
    "longer_life_once_closed": (EXTENSION, SET.format("expires_at = expires_at + interval '1 day'")),
    "second_final_charge": (ONE_FINAL, COPY_CHARGE.format(capture_id="'another'", which="final")),
}

COLUMNS = ("amount", "captured", "released", "charged", "captures", "status", "closed_at", "customer_id",
           "expires_at")


def _row(database_url: str, reservation_id: str) -> tuple:
    with psycopg.connect(database_url) as conn:
        reservation = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM reservations WHERE id = %s",
                                   (reservation_id,)).fetchone()
        charges = conn.execute("SELECT seq, capture_id, final, charged FROM charges WHERE reservation_id = %s "
                               "ORDER BY seq", (reservation_id,)).fetchall()
    return reservation, charges


def _refused(database_url: str, sql: str, params: dict[str, str]) -> str:
    """The refusal's constraint (or the guard's message) when `sql` is run and committed."""
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.IntegrityError) as refused:
        conn.execute(sql, params)
        conn.commit()
    return refused.value.diag.constraint_name or refused.value.diag.message_primary or ""


async def _capturing(kit: Kit) -> tuple[str, str, str]:
    """A customer with 10.00, a hold of 5.00 and one capture of 1.00 from it (4.00 still held)."""
    acme = await kit.customer("acme")
    other = await kit.customer("other")
    await kit.top_up(acme, "10.00", name="T")
    r = await kit.reserve(acme, "lease-1", amount="5.00")
    first = await kit.settle(acme, r.reservation.id, input_tokens=1000, final=False, capture_id="call-1")
    assert (first.status, first.charged) == ("capturing", amounts(x="1.00")["x"])
    assert await kit.balances(acme, platform=False) == amounts(T="5.00", acme__reserved="4.00",
                                                              acme__receivable="0")
    return acme, other, r.reservation.id


@pytest.mark.parametrize("attack", sorted(ATTACKS_OPEN))
async def test_a_capturing_reservation_cannot_be_written_around_its_hold(shared_kit, database_url, attack):
    acme, other, rid = await _capturing(shared_kit)
    before = _row(database_url, rid)
    expected, sql = ATTACKS_OPEN[attack]
    assert re.fullmatch(expected, _refused(database_url, sql, {"r": rid, "other": other}))
    assert _row(database_url, rid) == before
    # the engine still captures from what is left, and the final capture gives the rest back
    second = await shared_kit.settle(acme, rid, output_tokens=1000, final=True)  # 2.00
    assert (second.status, second.charged, second.released) == ("settled", amounts(x="2.00")["x"],
                                                                 amounts(x="2.00")["x"])
    assert await shared_kit.balances(acme, platform=False) == amounts(T="7.00", acme__reserved="0",
                                                                     acme__receivable="0")


@pytest.mark.parametrize("attack", sorted(ATTACKS_CLOSED))
async def test_a_settled_reservation_stays_accounted_for(shared_kit, database_url, attack):
    acme, other, rid = await _capturing(shared_kit)
    await shared_kit.settle(acme, rid, output_tokens=1000, final=True)
    before = _row(database_url, rid)
    assert before[0][:6] == (amounts(x="5.00")["x"], amounts(x="3.00")["x"], amounts(x="2.00")["x"],
                             amounts(x="3.00")["x"], 2, "settled")
    expected, sql = ATTACKS_CLOSED[attack]
    assert re.fullmatch(expected, _refused(database_url, sql, {"r": rid, "other": other}))
    assert _row(database_url, rid) == before
    assert await shared_kit.balances(acme, platform=False) == amounts(T="7.00", acme__reserved="0",
                                                                     acme__receivable="0")


async def test_the_guards_let_the_engines_own_forward_writes_through(shared_kit, database_url):
    """The attacks above are refused by the guards, not by a table nothing can write: legal
    forward moves (what a capture, then a release, write) pass every guard."""
    _, _, rid = await _capturing(shared_kit)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE reservations SET expires_at = expires_at + interval '1 hour' WHERE id = %s", (rid,))
        conn.execute("UPDATE reservations SET captured = captured + 1, charged = charged + 1, "
                     "captures = captures + 1 WHERE id = %s", (rid,))
        conn.execute("UPDATE reservations SET status = 'released', closed_at = now(), "
                     "released = amount - captured WHERE id = %s", (rid,))
        assert conn.execute("SELECT status, captured + released = amount FROM reservations WHERE id = %s",
                            (rid,)).fetchone() == ("released", True)
        conn.rollback()  # not kept: no posting moved the money
