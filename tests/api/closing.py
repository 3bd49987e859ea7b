"""Closing one customer's billing period early over HTTP, as the invoice tests do, and `utc`: an
instant written with a Z, as these tests send it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wallets.periods import Cycle, Period, period_of


def utc(at: datetime) -> str:
    """`at` in ISO 8601 with a Z for UTC (2026-03-01T00:00:00Z)."""
    return at.isoformat().replace("+00:00", "Z")


async def close_early(client, headers: dict[str, str], cid: str, period: Period | None = None) -> dict:
    """Close `cid`'s period (the current UTC month by default) now; the close's answer."""
    period = period or period_of(datetime.now(UTC), Cycle("UTC", None))
    until = utc(period.end + timedelta(hours=1, seconds=1))
    closed = await client.post("/v1/billing/close", headers=headers,
                               json={"until": until, "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    return closed.json()


async def close_invoice(client, headers: dict[str, str], cid: str) -> dict:
    """Close `cid`'s current period now; the one invoice it finalized."""
    [one] = (await close_early(client, headers, cid))["closed"]
    return (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=headers)).json()
