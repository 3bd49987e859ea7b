"""Closing one customer's billing period early over HTTP, as the invoice tests do."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wallets.periods import Cycle, Period, period_of


async def close_early(client, headers: dict[str, str], cid: str, period: Period | None = None) -> dict:
    """Close `cid`'s period (the current UTC month by default) now; the close's answer."""
    period = period or period_of(datetime.now(UTC), Cycle("UTC", None))
    until = (period.end + timedelta(hours=1, seconds=1)).isoformat().replace("+00:00", "Z")
    closed = await client.post("/v1/billing/close", headers=headers,
                               json={"until": until, "customer_id": cid, "early": True})
    assert closed.status_code == 200, closed.text
    return closed.json()


async def close_invoice(client, headers: dict[str, str], cid: str) -> dict:
    """Close `cid`'s current period now; the one invoice it finalized."""
    [one] = (await close_early(client, headers, cid))["closed"]
    return (await client.get(f"/v1/invoices/{one['invoice_id']}", headers=headers)).json()
