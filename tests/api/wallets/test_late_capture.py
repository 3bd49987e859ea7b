"""A capture the SDK spooled and delivered after the block's exit closed the reservation is
charged, once, in PostgreSQL as in the pure core (no usage goes unbilled)."""
from __future__ import annotations

from litestar.testing import AsyncTestClient


async def test_a_capture_delivered_after_the_release_is_charged_once(client: AsyncTestClient, book: str, tag: str):
    cid = f"late-{tag}"
    assert (await client.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": book})
            ).status_code == 201
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    r = (await client.post("/v1/reservations", json={"customer_id": cid, "request_id": "r1", "model": "model-a",
                                                      "amount": "1.00"})).json()
    assert (await client.post(f"/v1/reservations/{r['id']}/release", json={})).json()["released"] == "1.00"
    capture = {"usage": {"input_tokens": 1000, "output_tokens": 500}, "final": False, "capture_id": "cap-1"}
    late = await client.post(f"/v1/reservations/{r['id']}/settle", json=capture)
    # 1,000 x $10/M + 500 x $20/M + $0.01 a call = $0.03
    assert late.status_code == 200, late.text
    assert (late.json()["status"], late.json()["charged"]) == ("released", "0.03")
    again = await client.post(f"/v1/reservations/{r['id']}/settle", json=capture)
    assert again.status_code == 200 and again.json()["charged"] == "0.03"
    wallet = (await client.get(f"/v1/customers/{cid}/wallet")).json()
    assert (wallet["available"], wallet["reserved"]) == ("9.97", "0.00")
    final = await client.post(f"/v1/reservations/{r['id']}/settle", json={"usage": {"input_tokens": 1}})
    assert (final.status_code, final.json()["code"]) == (409, "reservation_closed")
    verify = (await client.post("/v1/audit/verify")).json()
    assert verify["ok"], [c for c in verify["checks"] if not c["ok"]]
