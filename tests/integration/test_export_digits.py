"""The Beancount and CSV exports show each currency's own digits, exactly: whole yen, dinars to
three decimals. Before, every amount had nine decimals (1000.000000000 JPY)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings

ADMIN = {"Authorization": "Bearer export-digits"}


def _export(url: str, fmt: str) -> str:
    done = subprocess.run([sys.executable, "-m", "api.cli", "audit", "export", "--format", fmt],
                          env={**os.environ, "TOKENTILL_DATABASE_URL": url}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_exports_show_whole_yen_and_dinars_to_three_decimals(scratch_url) -> None:
    app = create_app(Settings(admin_key="export-digits", scheduler=False), scratch_url)
    async with AsyncTestClient(app=app) as client:
        book = {"id": "digits", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "m-in", "model": "m", "token_type": "input", "price": "1.00"}]}
        assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
        for cid, currency, amount in (("yen", "JPY", "1000"), ("dinar", "KWD", "1.5"), ("cents", "USD", "1.00")):
            priced = {"price_book": "digits"} if currency == "USD" else {}  # a hold is for a model its book prices
            assert (await client.post("/v1/customers", headers=ADMIN,
                                      json={"id": cid, "currency": currency, **priced})).status_code == 201
            topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                                       json={"amount": amount, "reference": "p"})
            assert topped.status_code == 201, topped.text
        # cash is whole cents; a hold, like a charge, may be a fraction of one
        held = await client.post("/v1/reservations", headers=ADMIN, json={
            "customer_id": "cents", "request_id": "r1", "model": "m", "amount": "0.00015"})
        assert held.status_code == 201, held.text
    beancount = _export(scratch_url, "beancount")
    assert "  -1000 JPY\n" in beancount and "  1000 JPY\n" in beancount
    assert "  -1.500 KWD\n" in beancount and "  0.00015 USD\n" in beancount
    assert ".000000000" not in beancount
    rows = list(csv.DictReader(_export(scratch_url, "csv").splitlines()))
    assert sorted((r["asset"], r["amount"]) for r in rows) == [
        ("JPY", "-1000"), ("JPY", "1000"), ("KWD", "-1.500"), ("KWD", "1.500"), ("USD", "-0.00015"), ("USD", "-1.00"),
        ("USD", "0.00015"), ("USD", "1.00")]
