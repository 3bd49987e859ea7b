"""A scheduled job whose run leaves an item undone (its command refused) says so: the item is
logged by name, the run counts as an `error` and the job's last success stays where it was, so
an alert on `time() - tokentill_job_last_success_timestamp_seconds` fires while the item is
stuck; the other items are done all the same. The expiry jobs used to drop such an outcome
without a word and count the run `ok`, and a period that could not be closed was a log line in
a run counted `ok`: a grant that never expired, an invoice never issued, and every metric said
all was well."""
from __future__ import annotations

import logging
from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import text
from wallet_kit import Kit, refusing

from wallets.commands import ExpireLot, ExpireReservation
from wallets.jobs import jobs, run_job


def _job(name: str):
    return next(job for job in jobs(10) if job.name == name)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_grant_the_job_cannot_expire_is_logged_and_the_run_is_an_error(kit: Kit, monkeypatch, caplog):
    stuck, fine = await kit.customer("stuck"), await kit.customer("fine")
    expires = kit.clock.now + timedelta(hours=1)  # kit time: past by the wall clock the job reads
    lot = (await kit.grant(stuck, "1.00", expires_at=expires)).grant.id
    await kit.grant(fine, "2.00", expires_at=expires)
    refusing(ExpireLot, stuck, monkeypatch)
    job = _job("expire_grants")
    errors, last = _sample("tokentill_job_runs_total", job=job.name, result="error"), \
        _sample("tokentill_job_last_success_timestamp_seconds", job=job.name)
    with caplog.at_level(logging.WARNING):
        await run_job(kit.db, job)
    expired = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT customer_id FROM lots WHERE expired_at IS NOT NULL AND customer_id = ANY(:c)"),
        {"c": [stuck, fine]}))
    assert [r.customer_id for r in expired] == [fine]  # the other customer's grant expired all the same
    assert _sample("tokentill_job_runs_total", job=job.name, result="error") == errors + 1
    assert _sample("tokentill_job_last_success_timestamp_seconds", job=job.name) == last
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(lot in m and stuck in m and "refused for the test" in m for m in logged), logged

    monkeypatch.undo()  # the cause mended: the next run expires it and succeeds
    await run_job(kit.db, job)
    assert _sample("tokentill_job_runs_total", job=job.name, result="error") == errors + 1
    assert _sample("tokentill_job_last_success_timestamp_seconds", job=job.name) > last
    assert (await kit.balances(stuck))["breakage"] == 3_000_000_000


async def test_a_reservation_the_job_cannot_expire_is_logged_and_the_run_is_an_error(kit: Kit, monkeypatch,
                                                                                    caplog):
    stuck = await kit.customer("stuck")
    await kit.top_up(stuck, "5.00")
    held = (await kit.reserve(stuck, "r1", amount="1.00", ttl_seconds=60)).reservation.id
    refusing(ExpireReservation, stuck, monkeypatch)
    job = _job("expire_reservations")
    errors = _sample("tokentill_job_runs_total", job=job.name, result="error")
    with caplog.at_level(logging.WARNING):
        await run_job(kit.db, job)
    assert _sample("tokentill_job_runs_total", job=job.name, result="error") == errors + 1
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(held in m and stuck in m for m in logged), logged
