"""The close_periods job with a period it cannot close: the others close, the one refused is
logged by customer, and the run counts as an `error` without moving the job's last success (it
was a log line in a run counted `ok`: an invoice never issued while every metric said all was
well). Once the cause is gone the next run closes it."""
from __future__ import annotations

import logging

from billing_kit import BillingKit
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.integration.wallets.wallet_kit import refusing
from wallets.commands import ClosePeriod
from wallets.jobs import jobs, run_job


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_period_the_job_cannot_close_is_logged_and_the_run_is_an_error(bk: BillingKit, monkeypatch,
                                                                               caplog) -> None:
    stuck = await bk.customer("stuck", billing_mode="postpaid")  # November's period: due by the wall clock
    fine = await bk.customer("fine", billing_mode="postpaid")
    for cid in (stuck, fine):
        await bk.event(cid, "model-a", 1000, 500)
    refusing(ClosePeriod, stuck, monkeypatch)
    job = next(j for j in jobs(10) if j.name == "close_periods")
    errors = _sample("tokentill_job_runs_total", job=job.name, result="error")
    last = _sample("tokentill_job_last_success_timestamp_seconds", job=job.name)
    with caplog.at_level(logging.WARNING):
        await run_job(bk.db, job)

    async def invoiced(conn):
        return [r.customer_id for r in await conn.execute(text("SELECT customer_id FROM invoices ORDER BY 1"))]

    assert await bk.db.read(invoiced) == [fine]
    assert _sample("tokentill_job_runs_total", job=job.name, result="error") == errors + 1
    assert _sample("tokentill_job_last_success_timestamp_seconds", job=job.name) == last
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(stuck in m and "refused for the test" in m for m in logged), logged

    monkeypatch.undo()
    await run_job(bk.db, job)
    assert sorted(await bk.db.read(invoiced)) == sorted([fine, stuck])
    assert _sample("tokentill_job_last_success_timestamp_seconds", job=job.name) > last
