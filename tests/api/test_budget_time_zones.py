"""A budget's time_zone is the zone its windows begin in: a day's or a month's. A per-request, a
rolling minute's or a lifetime budget has no window that begins in a zone (one given is refused
422), so it shows none (null), on its create, GET /v1/budgets/{id} and the list alike."""

from __future__ import annotations

import uuid

from tests.api.apps import api_client

RULES = [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"}]


async def test_only_a_day_or_a_month_budget_shows_a_time_zone(database_url: str):
    """Customer in Asia/Kolkata (UTC+05:30): request, minute and lifetime budgets show time_zone
    null; a day and a month budget its zone, their windows starting at 18:30Z (midnight there)."""
    name = f"tz-{uuid.uuid4().hex[:8]}"
    async with api_client(database_url, admin="tz-admin", send_admin=True) as client:
        book = {"id": name, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}
        assert (await client.post("/v1/price-books", json=book)).status_code == 201
        made = await client.post("/v1/customers", json={"id": name, "price_book": name, "time_zone": "Asia/Kolkata"})
        assert made.status_code == 201, made.text
        shown = {}
        for window in ("request", "minute", "day", "month", "lifetime"):
            body = {"customer_id": name, "window": window, "metric": "money", "limit": "1.00"}
            created = await client.post("/v1/budgets", json=body)
            assert created.status_code == 201, created.text
            got = (await client.get(f"/v1/budgets/{created.json()['id']}")).json()
            shown[window] = (created.json()["time_zone"], got["time_zone"])
        zoned = ("Asia/Kolkata", "Asia/Kolkata")
        assert shown == {
            "request": (None, None),
            "minute": (None, None),
            "day": zoned,
            "month": zoned,
            "lifetime": (None, None),
        }
        listed = (await client.get(f"/v1/budgets?customer_id={name}")).json()["budgets"]
        assert sorted((b["window"], b["time_zone"]) for b in listed) == [
            ("day", "Asia/Kolkata"),
            ("lifetime", None),
            ("minute", None),
            ("month", "Asia/Kolkata"),
            ("request", None),
        ]
        day = next(b for b in listed if b["window"] == "day")
        assert day["window_start"].endswith("T18:30:00Z")  # midnight in Kolkata, 05:30 ahead of UTC
