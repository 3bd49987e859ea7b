"""The gateway spool strikes off delivered settles in rounds, not after each batch, and keeps
every record not yet delivered."""
from __future__ import annotations

from pathlib import Path

from api.background import item_of
from api.gateway.settles import RoundsSpool, settle_key, settle_record


def records(n: int) -> list:
    return [settle_record("acme", f"req-{i}", f"res-{i}", "usage", {"input_tokens": i}) for i in range(n)]


def test_delivered_records_stay_until_a_round_is_full_then_all_are_struck_off(tmp_path: Path):
    spool = RoundsSpool(tmp_path / "gw.jsonl", every=3)
    spool.append_many(records(5))
    spool.remove({settle_key("acme", "req-0")})
    spool.remove({settle_key("acme", "req-1")})
    assert len(spool.records()) == 5  # two delivered: not yet a round
    assert spool.remove({settle_key("acme", "req-2")}) == 2
    assert [r.idempotency_key for r in spool.records()] == [settle_key("acme", "req-3"), settle_key("acme", "req-4")]


def test_compact_strikes_off_what_was_delivered_and_keeps_the_rest(tmp_path: Path):
    spool = RoundsSpool(tmp_path / "gw.jsonl", every=100)
    spool.append_many(records(3))
    spool.remove({settle_key("acme", "req-1")})
    assert spool.compact() == 2
    assert [r.reservation_id for r in spool.records()] == ["res-0", "res-2"]


def test_a_refused_record_is_set_aside_at_once(tmp_path: Path):
    spool = RoundsSpool(tmp_path / "gw.jsonl", every=100)
    first, second = records(2)
    spool.append_many([first, second])
    spool.remove({first.idempotency_key}, [(first, "409 closed")])
    assert [r.reservation_id for r in spool.records()] == ["res-1"]
    assert "409 closed" in spool.rejected_path.read_text()


def test_settle_keys_are_derived_from_the_customer_and_the_request_id():
    assert settle_key("acme", "req-1") == settle_key("acme", "req-1")
    assert settle_key("acme", "req-1") != settle_key("globex", "req-1") != settle_key("acme", "req-2")


async def test_a_malformed_spool_record_is_refused_for_good_and_reaches_no_engine():
    from api.gateway.settles import GatewaySettles

    class NoEngine:
        async def submit(self, command):
            raise AssertionError("a malformed record reached the engine")

    settles = GatewaySettles(RoundsSpool("/nonexistent/gw.jsonl"), NoEngine())
    answer = await settles._settle({"idempotency_key": "k", "reservation_id": "r", "customer_id": "acme"})
    assert answer["status"] == 422  # the BackgroundSettler sets a 422 aside in `.rejected`


class _DownFirst:
    """An engine whose first `down` submits find the database down (RetriesExhaustedError); the
    later ones are charged 7."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    async def submit(self, command):
        from ledger.db import RetriesExhaustedError

        self.calls += 1
        if self.calls <= self.down:
            raise RetriesExhaustedError("the database is down")
        return type("Charged", (), {"charged": 7})()


def _record_sleeps(monkeypatch) -> list[float]:
    """The delays the background queue asks for, recorded, not waited."""
    from api.background import BackgroundSettler

    slept: list[float] = []

    async def recorded(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(BackgroundSettler, "_sleep", staticmethod(recorded))
    return slept


async def test_a_settle_the_database_cannot_take_now_waits_what_post_v1_settlements_asks(tmp_path: Path,
                                                                                      monkeypatch):
    """A gateway settle the ledger cannot take now (the database down) was answered 503 with no
    wait in its body, so the queue sent it again after the backoff's jitter alone (under RETRY's
    0.2 s), where an item of POST /v1/settlements answered so asks `retry_after_seconds: 1` (the
    whole call's Retry-After). Now the gateway's answer asks the same, and the queue waits it."""
    from api.gateway.settles import GatewaySettles

    slept = _record_sleeps(monkeypatch)
    engine = _DownFirst(2)  # the call below, then the queue's first send; the queue's second is taken
    settles = GatewaySettles(RoundsSpool(tmp_path / "gw.jsonl", every=1), engine)
    [record] = records(1)
    answer = await settles._settle(item_of(record))
    assert answer["status"] == 503 and answer["body"]["code"] == "service_unavailable"
    assert answer["body"]["retry_after_seconds"] == 1  # as api.routes.settlements' item (7548d42)
    await settles.start()
    await settles.put(record)
    assert await settles.stop() == 0 and engine.calls == 3  # the one above, the queue's 503, then taken
    # one wait: the asked 1 s + full jitter under RETRY's backoff_s 0.2 * 2**0: between 1 and 1.2 s
    # (it was the jitter alone, under 0.2 s)
    assert len(slept) == 1 and 1 <= slept[0] <= 1.2, slept
    assert not (tmp_path / "gw.jsonl").exists() and not (tmp_path / "gw.jsonl.rejected").exists()


async def test_a_settle_an_answer_waited_for_is_sent_again_after_the_wait_its_503_asked(tmp_path: Path,
                                                                                    monkeypatch):
    """Settle mode "wait": the answer's own attempt is answered 503 (the database down), asking
    1 s; the queue it is handed to sent it again at once (no wait recorded, a second attempt on
    the database just found down), then waited. Now the queue waits what that 503 asked first:
    1 s + full jitter under RETRY's backoff_s 0.2 * 2**0, between 1 and 1.2 s, then it is taken."""
    from api.gateway.settles import GatewaySettles

    slept = _record_sleeps(monkeypatch)
    engine = _DownFirst(1)
    settles = GatewaySettles(RoundsSpool(tmp_path / "gw.jsonl", every=1), engine)
    await settles.start()
    [record] = records(1)
    assert await settles.settle_waiting(record) is None  # not taken when the answer went back
    assert await settles.stop() == 0 and engine.calls == 2  # the answer's 503, then the queue's, taken
    assert len(slept) == 1 and 1 <= slept[0] <= 1.2, slept  # was: [] (sent again at once)
    assert not (tmp_path / "gw.jsonl").exists() and not (tmp_path / "gw.jsonl.rejected").exists()


async def test_a_settle_the_engine_fails_by_a_fault_is_logged_with_its_call_and_kept_for_the_next_start(
        tmp_path: Path, caplog):
    """A fault that is no refusal (a bug, a constraint): the item's 500, as POST /v1/settlements'
    item; its log names the call (request id, reservation) an operator must look at (it named
    only the derived key, a hash), and the record stays spooled, sent when the gateway next starts."""
    from api.gateway.settles import GatewaySettles

    class FailsFirst:
        calls = 0

        async def submit(self, command):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a fault that is no refusal")
            return type("Charged", (), {"charged": 7})()

    engine = FailsFirst()
    [record] = records(1)
    with caplog.at_level("ERROR", logger="tokentill.gateway"):
        settles = GatewaySettles(RoundsSpool(tmp_path / "gw.jsonl", every=1), engine)
        await settles.start()
        await settles.put(record)
        await settles.stop()
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert any("req-0" in m and "res-0" in m for m in logged), logged
    assert engine.calls == 1 and [r.reservation_id for r in RoundsSpool(tmp_path / "gw.jsonl").records()] == ["res-0"]
    again = GatewaySettles(RoundsSpool(tmp_path / "gw.jsonl", every=1), engine)
    await again.start()  # the earlier run's record, adopted and taken
    assert await again.stop() == 0 and engine.calls == 2
    assert not (tmp_path / "gw.jsonl").exists() and not (tmp_path / "gw.jsonl.rejected").exists()
