"""A customer's price overrides rate its usage end to end: the reserve's hold, the settle and the
post-hoc usage event at the contract price, discounts and free allowances as lines of their own
(on the charge and the invoice), the version in force at the usage's own time, and a re-rate
preview after a version that covers usage already charged. Amounts worked by hand from the
stated prices."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.apps import api_client
from tests.api.closing import close_early, utc
from wallets.periods import Cycle, period_of

ADMIN = {"Authorization": "Bearer por-admin"}
RUN = uuid.uuid4().hex[:8]
BOOK = f"por-{RUN}"
RULES = [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
         {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
         {"id": "call", "token_type": "request", "price": "0.01"}]


@pytest.fixture(scope="module")
async def client(database_url):
    async with api_client(database_url, admin="por-admin", books=[
            {"id": BOOK, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}]) as c:
        yield c


async def customer(client, overrides: dict | None, *, effective_from: datetime | None = None) -> str:
    cid = f"por-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD",
                                                                    "price_book": BOOK})
    assert made.status_code == 201, made.text
    topped = await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN, json={"amount": "10.00"})
    assert topped.status_code == 201, topped.text
    if overrides is not None:  # in force from an hour ago: the usage events below are that recent
        await put_overrides(client, cid, effective_from or datetime.now(UTC) - timedelta(hours=1), **overrides)
    return cid


async def event(client, cid: str, at: datetime, input_tokens: int, output_tokens: int = 0) -> dict:
    event_id = f"e-{uuid.uuid4().hex[:8]}"
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
        "event_id": event_id, "customer_id": cid, "model": "model-a", "timestamp": utc(at),
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}])
    assert sent.json()["accepted"] == 1, sent.text
    trace = await client.get(f"/v1/audit/charges/{event_id}?customer_id={cid}", headers=ADMIN)
    assert trace.status_code == 200, trace.text
    return trace.json()


def charged(trace: dict) -> str:
    [charge] = trace["charges"]
    return charge["charged"]


async def put_overrides(client, cid: str, at: datetime | None = None, **overrides) -> dict:
    """A new version of `cid`'s price overrides, in force from `at` (None: from the server's now): the answer."""
    body = {**overrides, **({"effective_from": utc(at)} if at is not None else {})}
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json=body)
    assert put.status_code == 201, put.text
    return put.json()


async def book_version(client) -> str:
    """The book's one version: what a re-rate to the customer's overrides names."""
    return (await client.get(f"/v1/price-books/{BOOK}", headers=ADMIN)).json()["versions"][0]["version"]


async def upcoming_of(client, cid: str) -> dict:
    return (await client.get(f"/v1/customers/{cid}/invoices/upcoming", headers=ADMIN)).json()


async def wallet_of(client, cid: str) -> dict:
    return (await client.get(f"/v1/customers/{cid}/wallet", headers=ADMIN)).json()


async def verified(client) -> None:
    """/v1/audit/verify passes, each failed check shown where not."""
    answer = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert answer["ok"], [c for c in answer["checks"] if not c["ok"]]


async def test_the_hold_and_the_settle_use_the_contract_price(client) -> None:
    cid = await customer(client, {"contract_prices": [
        {"id": "acme-a-in", "model": "model-a", "token_type": "input", "price": "8.00"}]})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "r1", "model": "model-a",
        "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
    assert held.status_code == 201, held.text
    # 1,000 input at the contract's $8/M = 0.008; 500 output at $20/M = 0.01; the call fee 0.01
    assert held.json()["amount"] == "0.028"
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json={
        "usage": {"input_tokens": 100_000, "output_tokens": 1000}, "final": True})
    assert settled.status_code == 200, settled.text
    # 100,000 x $8/M = 0.80; 1,000 x $20/M = 0.02; the call fee 0.01
    assert settled.json()["charged"] == "0.83"
    [line] = [ln for ln in settled.json()["lines"] if ln["token_type"] == "input"]
    assert line["unit_price"] == "8.00" and line["amount"] == "0.80" and line["override_id"] == "acme-a-in"
    wallet = await wallet_of(client, cid)
    assert wallet["available"] == "9.17" and wallet["reserved"] == "0.00"
    trace = (await client.get(f"/v1/audit/charges/r1?customer_id={cid}", headers=ADMIN)).json()
    [stored] = [ln for ln in trace["charges"][0]["lines"] if ln["token_type"] == "input"]
    assert stored["override_id"] == "acme-a-in" and stored["overrides_version"] == 1


async def test_a_bulk_settlement_charges_the_contract_price(client) -> None:
    cid = await customer(client, {"contract_prices": [{"id": "c-out", "model": "model-a", "token_type": "output",
                                                       "price": "4.00"}]})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "bulk-1", "model": "model-a", "amount": "1.00"})
    assert held.status_code == 201, held.text
    done = await client.post("/v1/settlements", headers=ADMIN, json=[
        {"reservation_id": held.json()["id"], "usage": {"input_tokens": 10_000, "output_tokens": 50_000}}])
    [result] = done.json()["results"]
    # 10,000 x $10/M = 0.10; 50,000 output at the contract's $4/M = 0.20; the call fee 0.01
    assert result["status"] == 200 and result["body"]["charged"] == "0.31", result


async def test_a_customer_without_overrides_pays_the_book(client) -> None:
    cid = await customer(client, None)
    # 100,000 x $10/M = 1.00; the call fee 0.01
    assert charged(await event(client, cid, datetime.now(UTC) - timedelta(minutes=1), 100_000)) == "1.01"


async def test_a_discount_is_a_line_of_its_own_on_the_charge_and_the_invoice(client) -> None:
    cid = await customer(client, {"discounts": [{"id": "ten-off", "model": "model-a", "percent": "10"}]})
    trace = await event(client, cid, datetime.now(UTC) - timedelta(minutes=1), 100_000, 1000)
    # usage: 1.00 + 0.02 + the call fee 0.01 = 1.03; 10 % off each line: -0.10, -0.002, -0.001
    assert charged(trace) == "0.927"
    lines = trace["charges"][0]["lines"]
    discounts = sorted((ln["token_type"], ln["amount"]) for ln in lines if ln["kind"] == "discount")
    assert discounts == [("input", "-0.10"), ("output", "-0.002"), ("request", "-0.001")]
    assert all(ln["override_id"] == "ten-off" for ln in lines if ln["kind"] == "discount")
    upcoming = await upcoming_of(client, cid)
    kinds = {(ln.get("kind"), ln.get("token_type")): ln["amount"] for ln in upcoming["lines"]}
    assert kinds[("discount", "input")] == "-0.10", upcoming["lines"]


async def test_a_discount_on_output_takes_its_share_off_reasoning_billed_at_the_output_rule(client) -> None:
    """The book has no reasoning rule, so reasoning is billed at its output rule (API.md), as a
    contract price on output prices it; the discount on output missed it: charged 0.0392 where
    10 % off every line billed as output is 0.038. The hold leaves a discount of one token type
    out (README), so it still holds at least the charge."""
    cid = await customer(client, {"discounts": [{"id": "out-10", "token_type": "output", "percent": "10"}]})
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "think-1", "model": "model-a",
        "estimate": {"input_tokens": 1000, "max_output_tokens": 1000}})
    assert held.status_code == 201, held.text
    # 1,000 input at $10/M = 0.01; 1,000 output at $20/M = 0.02; the call fee 0.01
    assert held.json()["amount"] == "0.04"
    settled = await client.post(f"/v1/reservations/{held.json()['id']}/settle", headers=ADMIN, json={
        "usage": {"input_tokens": 1000, "output_tokens": 400, "reasoning_tokens": 600}, "final": True})
    assert settled.status_code == 200, settled.text
    # 0.01 + 0.008 + 0.012 (600 reasoning at the output rule's $20/M) + 0.01; 10 % of 0.02 off
    assert settled.json()["charged"] == "0.038"
    trace = (await client.get(f"/v1/audit/charges/think-1?customer_id={cid}", headers=ADMIN)).json()
    discounts = sorted((ln["token_type"], ln["rule_id"], ln["amount"])
                       for ln in trace["charges"][0]["lines"] if ln["kind"] == "discount")
    assert discounts == [("output", "a-out", "-0.0008"), ("reasoning", "a-out", "-0.0012")]
    event_trace = await event(client, cid, datetime.now(UTC) - timedelta(minutes=1), 0, 1000)
    assert charged(event_trace) == "0.028"  # 0.02 + the call fee, 10 % of 0.02 off


async def test_a_free_allowance_pays_until_it_is_spent_in_the_period(client) -> None:
    cid = await customer(client, {"free_allowances": [{"id": "free-1", "amount": "1.50"}]})
    now = datetime.now(UTC)
    first = await event(client, cid, now - timedelta(minutes=2), 100_000)  # 1.01, all of it free
    assert charged(first) == "0.00"
    [free] = [ln for ln in first["charges"][0]["lines"] if ln["kind"] == "free_allowance"]
    assert free["amount"] == "-1.01" and free["override_id"] == "free-1"
    # 0.49 left of the allowance: 1.01 - 0.49 = 0.52 charged
    assert charged(await event(client, cid, now - timedelta(minutes=1), 100_000)) == "0.52"
    assert charged(await event(client, cid, now - timedelta(seconds=30), 100_000)) == "1.01"
    upcoming = await upcoming_of(client, cid)
    # the allowance is a line of its own on the invoice: the first event's -1.01 (all of it free:
    # no money moved, no entry, but its usage is billed) and the second's -0.49
    free_lines = [ln for ln in upcoming["lines"] if ln.get("kind") == "free_allowance"]
    assert [ln["amount"] for ln in free_lines] == ["-1.50"], upcoming["lines"]
    [used] = [ln for ln in upcoming["lines"] if ln.get("kind") == "usage"]
    assert (used["quantity"], used["amount"]) == (300_000, "3.00")
    checked = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    [counters] = [c for c in checked["checks"] if c["name"] == "usage_counters"]
    assert counters["ok"], counters  # the money taken from the allowance is counted as the charges say
    [invoice] = (await close_early(client, ADMIN, cid, period_of(now, Cycle())))["closed"]
    final = (await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers=ADMIN)).json()
    assert [ln["amount"] for ln in final["lines"] if ln.get("kind") == "free_allowance"] == ["-1.50"]
    for accept in ("text/html", "application/pdf"):  # a line without a token type renders for a person too
        shown = await client.get(f"/v1/invoices/{invoice['invoice_id']}", headers={**ADMIN, "Accept": accept})
        assert shown.status_code == 200 and shown.headers["content-type"].startswith(accept), shown.text[:300]


async def test_a_later_version_never_changes_earlier_usage_and_a_rerate_previews_what_it_covers(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]},
        effective_from=now - timedelta(hours=3))
    early = await event(client, cid, now - timedelta(hours=2), 100_000)
    late = await event(client, cid, now - timedelta(minutes=10), 100_000)
    assert charged(early) == charged(late) == "0.81"  # 0.80 + the call fee
    put = await put_overrides(client, cid, now - timedelta(minutes=30), contract_prices=[
        {"id": "c5", "model": "model-a", "token_type": "input", "price": "5.00"}])
    assert put["version"] == 2, put
    after = await event(client, cid, now - timedelta(minutes=5), 100_000)
    assert charged(after) == "0.51"  # 0.50 + the call fee
    for trace in (early, late):  # what was charged stays: history is never rewritten
        again = await client.get(f"/v1/audit/charges/{trace['request_id']}?customer_id={cid}",
                                 headers=ADMIN)
        assert charged(again.json()) == "0.81"
    preview = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": BOOK, "version": await book_version(client),
        "from": utc(now - timedelta(hours=3)), "to": utc(now), "customer_id": cid, "mode": "preview"})
    assert preview.status_code == 200, preview.text
    # only the usage at now-10min falls under version 2 ($5/M): 0.80 -> 0.50; the charge stood at
    # 0.81 with its call fee, as it was, and stands at 0.51
    assert preview.json()["customers"] == [{
        "customer_id": cid, "charges": 1, "old_amount": "0.81", "new_amount": "0.51", "delta": "-0.30",
        "lines": [{"model": "model-a", "token_type": "input", "old_amount": "0.80", "new_amount": "0.50",
                   "delta": "-0.30"}]}]


async def test_a_rerate_applied_after_a_backdated_version_gives_the_difference_back(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]},
        effective_from=now - timedelta(hours=3))
    charged_at_8 = await event(client, cid, now - timedelta(minutes=10), 100_000)
    assert charged(charged_at_8) == "0.81"
    await put_overrides(client, cid, now - timedelta(minutes=30), contract_prices=[
        {"id": "c5", "model": "model-a", "token_type": "input", "price": "5.00"}])
    applied = await rerate(client, cid, now - timedelta(hours=3), now)
    assert applied["customers"][0]["delta"] == "-0.30"
    # 10.00 topped up, 0.81 charged, 0.30 given back
    assert (await wallet_of(client, cid))["available"] == "9.49"
    trace = (await client.get(f"/v1/audit/charges/{charged_at_8['request_id']}?customer_id={cid}",
                              headers=ADMIN)).json()
    [adjustment] = trace["charges"][0]["adjustments"]
    assert adjustment["old_amount"] == "0.81" and adjustment["new_amount"] == "0.51"


async def backdate(client, cid: str, at: datetime, price: str) -> None:
    """Overrides from `at` on: model-a input at `price` per 1M (contract price `c<price>`)."""
    await put_overrides(client, cid, at, contract_prices=[
        {"id": f"c{price}", "model": "model-a", "token_type": "input", "price": price}])


async def rerate(client, cid: str, since: datetime, until: datetime) -> dict:
    applied = await client.post("/v1/rerate", headers=ADMIN, json={
        "price_book": BOOK, "version": await book_version(client), "from": utc(since), "to": utc(until),
        "customer_id": cid, "mode": "apply"})
    assert applied.status_code == 200, applied.text
    assert applied.json()["errors"] == [], applied.text
    return applied.json()


async def test_a_second_backdated_override_is_rerated_under_the_same_book_version(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]},
        effective_from=now - timedelta(hours=3))
    trace = await event(client, cid, now - timedelta(minutes=10), 100_000)
    assert charged(trace) == "0.81"  # 100,000 x $8/M + the call fee
    await backdate(client, cid, now - timedelta(minutes=30), "5.00")
    assert (await rerate(client, cid, now - timedelta(hours=3), now))["delta"] == "-0.30"  # 0.80 -> 0.50
    await backdate(client, cid, now - timedelta(minutes=20), "3.00")
    second = await rerate(client, cid, now - timedelta(hours=3), now)
    assert second["delta"] == "-0.20", second  # 0.50 -> 0.30
    # the charge (its call fee with it) stood at 0.51 and stands at 0.31
    assert second["customers"][0]["old_amount"] == "0.51" and second["customers"][0]["new_amount"] == "0.31"
    again = await rerate(client, cid, now - timedelta(hours=3), now)  # the same re-rate: nothing more moves
    assert again["delta"] == "-0.20" and again["rerate_id"] == second["rerate_id"]
    upcoming = await upcoming_of(client, cid)
    assert upcoming["total"] == "0.31", upcoming  # 0.30 at the latest price + the call fee
    assert [ln["amount"] for ln in upcoming["lines"] if ln["kind"] == "adjustment"] == ["-0.50"]  # both re-rates
    wallet = await wallet_of(client, cid)
    assert wallet["available"] == "9.69"  # 10.00 - 0.81 + 0.30 + 0.20
    again = (await client.get(f"/v1/audit/charges/{trace['request_id']}?customer_id={cid}", headers=ADMIN)).json()
    assert [(a["old_amount"], a["new_amount"]) for a in again["charges"][0]["adjustments"]] == [
        ("0.81", "0.51"), ("0.51", "0.31")]
    await verified(client)


async def test_a_second_backdated_override_over_an_invoiced_period_gets_a_credit_note_of_its_own(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]},
        effective_from=now - timedelta(hours=3))
    await event(client, cid, now - timedelta(minutes=10), 100_000)
    [invoice] = (await close_early(client, ADMIN, cid, period_of(now - timedelta(minutes=10), Cycle())))["closed"]
    await backdate(client, cid, now - timedelta(minutes=30), "5.00")
    first = await rerate(client, cid, now - timedelta(hours=3), now)
    await backdate(client, cid, now - timedelta(minutes=20), "3.00")
    second = await rerate(client, cid, now - timedelta(hours=3), now)
    assert [n["total"] for n in first["credit_notes"] + second["credit_notes"]] == ["-0.30", "-0.20"]
    assert {n["invoice_id"] for n in first["credit_notes"] + second["credit_notes"]} == {invoice["invoice_id"]}
    notes = (await client.get(f"/v1/customers/{cid}/credit-notes", headers=ADMIN)).json()["credit_notes"]
    assert [n["total"] for n in notes] == ["-0.30", "-0.20"]
    wallet = await wallet_of(client, cid)
    assert wallet["available"] == "9.69"  # 10.00 - 0.81 + 0.30 + 0.20
    await verified(client)


async def test_a_free_allowance_a_rerate_spent_on_earlier_usage_is_not_given_again(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, None)
    for minutes in (50, 49, 48):  # 100,000 x $10/M + the call fee: 1.01 each, 3.03
        assert charged(await event(client, cid, now - timedelta(minutes=minutes), 100_000)) == "1.01"
    await put_overrides(client, cid, now - timedelta(hours=1), free_allowances=[{"id": "free-5", "amount": "5.00"}])
    assert (await rerate(client, cid, now - timedelta(hours=1), now))["delta"] == "-3.03"  # the allowance paid them
    # 5.00 - 3.03 = 1.97 of it is left: the next call free, the one after it 0.96 free and 0.05 charged
    assert charged(await event(client, cid, now - timedelta(minutes=2), 100_000)) == "0.00"
    assert charged(await event(client, cid, now - timedelta(minutes=1), 100_000)) == "0.05"
    upcoming = await upcoming_of(client, cid)
    assert upcoming["total"] == "0.05", upcoming  # 5 calls, 5.05, the allowance's 5.00 off
    await verified(client)


async def test_a_rerate_that_makes_a_free_allowance_pay_less_moves_its_counter_down(client) -> None:
    now = datetime.now(UTC)
    cid = await customer(client, {"free_allowances": [{"id": "free-5", "amount": "5.00"}]},
                         effective_from=now - timedelta(hours=2))
    for minutes in (50, 49, 48):  # 1.01 each, all free: 3.03 of the 5.00 taken
        assert charged(await event(client, cid, now - timedelta(minutes=minutes), 100_000)) == "0.00"
    await put_overrides(client, cid, now - timedelta(hours=1), free_allowances=[{"id": "free-5", "amount": "1.00"}])
    # the allowance, cut to 1.00 from before those calls, pays 1.00 of them: its counter goes 3.03 -> 1.00
    assert (await rerate(client, cid, now - timedelta(hours=1), now))["delta"] == "2.03"
    assert charged(await event(client, cid, now - timedelta(minutes=2), 100_000)) == "1.01"  # none of it left
    await verified(client)


async def test_a_rerate_that_changes_who_pays_but_not_the_charge_moves_the_allowance(client) -> None:
    # a discount backdated over calls a free allowance paid whole: each charge stays 0.00, but the
    # discount now pays half of it and the allowance takes only the rest (the re-rate was a 500:
    # charge_adjustments refused an adjustment whose amount did not change)
    now = datetime.now(UTC)
    cid = await customer(client, {"free_allowances": [{"id": "free-5", "amount": "5.00"}]},
                         effective_from=now - timedelta(hours=2))
    for minutes in (50, 49, 48):  # 1.01 each, all free: 3.03 of the 5.00 taken
        assert charged(await event(client, cid, now - timedelta(minutes=minutes), 100_000)) == "0.00"
    await put_overrides(client, cid, now - timedelta(hours=1), free_allowances=[{"id": "free-5", "amount": "5.00"}],
                        discounts=[{"id": "half", "model": "model-a", "percent": "50"}])
    result = await rerate(client, cid, now - timedelta(hours=1), now)
    assert result["delta"] == "0.00", result
    # the allowance paid 3 x 0.505 = 1.515 of them: 3.485 left. 700,000 tokens: 7.01, half off 3.505,
    # the allowance 3.485 of it, 0.02 charged (1.535 with the 1.97 the counter said before)
    assert charged(await event(client, cid, now - timedelta(minutes=2), 700_000)) == "0.02"
    await verified(client)


async def test_a_rerate_ending_before_later_usage_leaves_that_usage_its_share_of_the_allowance(client) -> None:
    # a re-rate over part of a period: the calls after its range keep what they took of the free
    # allowance, so the calls in it can take only what is left of it, not the whole allowance again
    now = datetime.now(UTC)
    cid = await customer(client, {"free_allowances": [{"id": "free-5", "amount": "5.00"}]},
                         effective_from=now - timedelta(hours=2))
    assert charged(await event(client, cid, now - timedelta(minutes=50), 100_000)) == "0.00"  # 1.01, free
    assert charged(await event(client, cid, now - timedelta(minutes=40), 300_000)) == "0.00"  # 3.01, free
    assert charged(await event(client, cid, now - timedelta(minutes=30), 200_000)) == "1.03"  # 2.01: 0.98 free
    await put_overrides(client, cid, now - timedelta(minutes=55), free_allowances=[{"id": "free-5", "amount": "5.00"}],
                        contract_prices=[{"id": "c20", "model": "model-a", "token_type": "input", "price": "20.00"}])
    # the first two calls at $20/M: 2.01 and 6.01; the allowance has 5.00 - 0.98 = 4.02 left for
    # them (the third call, after the range, keeps its 0.98): 8.02 - 4.02 = 4.00 more to pay
    result = await rerate(client, cid, now - timedelta(minutes=60), now - timedelta(minutes=35))
    assert result["delta"] == "4.00", result
    upcoming = await upcoming_of(client, cid)
    assert upcoming["total"] == "5.03", upcoming  # 2.01 + 6.01 + 2.01 used, 5.00 of it free
    # the allowance is spent: the next call pays in full
    assert charged(await event(client, cid, now - timedelta(minutes=2), 100_000)) == "2.01"
    await verified(client)


async def test_overrides_set_now_take_effect_after_a_usage_event_timed_ahead_and_charged_before_them(
        client) -> None:
    """A usage event may be timed up to 300 s ahead of the server's clock. Charged at $8/M before
    a version set "now" ($5/M), it keeps $8/M; so that version takes effect just after its time,
    and the overrides' history says what rated it. Before, it took effect at the server's clock,
    120 s before the event: the trace said $8/M where the history said $5/M was in force."""
    now = datetime.now(UTC)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]})
    ahead = now.replace(microsecond=0) + timedelta(seconds=120)
    assert charged(await event(client, cid, ahead, 100_000)) == "0.81"  # 0.80 + the call fee
    put = await put_overrides(client, cid, contract_prices=[
        {"id": "c5", "model": "model-a", "token_type": "input", "price": "5.00"}])  # no effective_from: now
    assert datetime.fromisoformat(put["effective_from"]) == ahead + timedelta(microseconds=1), put
    assert charged(await event(client, cid, ahead + timedelta(seconds=1), 100_000)) == "0.51"  # $5/M from then


async def test_overrides_from_finer_than_a_microsecond_take_effect_at_the_next_microsecond(client) -> None:
    """Overrides from T.0000005 are in force from that instant: usage at T (.000000) is before it,
    usage at T.000001 after. The 7th digit was dropped (T.000000): the $5/M version rated usage at
    T, half a microsecond before its time. Read now as the next microsecond, as a price version's
    effective_from is. By hand: 100,000 input tokens at $8/M = 0.80, at $5/M = 0.50, each plus the
    $0.01 call fee: 0.81 at T, 0.51 at T.000001."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    cid = await customer(client, {"contract_prices": [
        {"id": "c8", "model": "model-a", "token_type": "input", "price": "8.00"}]},
        effective_from=start - timedelta(hours=1))
    sent = {"effective_from": utc(start)[:-1] + ".0000005Z",
            "contract_prices": [{"id": "c5", "model": "model-a", "token_type": "input", "price": "5.00"}]}
    put = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json=sent)
    assert put.status_code == 201, put.text
    assert datetime.fromisoformat(put.json()["effective_from"]) == start + timedelta(microseconds=1)
    again = await client.put(f"/v1/customers/{cid}/price-overrides", headers=ADMIN, json=sent)
    assert (again.status_code, again.json()["version"]) == (200, 2)  # the same version, as read
    assert charged(await event(client, cid, start, 100_000)) == "0.81"
    assert charged(await event(client, cid, start + timedelta(microseconds=1), 100_000)) == "0.51"


async def test_a_discounted_charge_too_big_to_post_is_refused_as_one_not_an_internal_error(client):
    """A price of 999,999,999.999999999999999999 per 1M and 10^15 - 1 input tokens, 50.000000000000000001 %
    off: the discount's exact amount has 62 digits (pricing's context held 60 and trapped it: a usage
    event and a reserve were 500). The charge, about $5 x 10^17 (tests/unit/pricing/test_pricing_rating.py
    works it out), is past what one posting carries ($9,223,372,036.854775807), so it is refused as the
    undiscounted one is: the event rejected and the reserve 422, `validation_error` naming the field
    (its prompt alone past it, whatever the output cap: estimate.input_tokens, since 24c13fb0)."""
    book = f"por-big-{uuid.uuid4().hex[:8]}"
    posted = await client.post("/v1/price-books", headers=ADMIN, json={
        "id": book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
            {"id": "in", "model": "model-a", "token_type": "input", "price": "999999999.999999999999999999"}]})
    assert posted.status_code == 201, posted.text
    cid = f"por-{uuid.uuid4().hex[:10]}"
    made = await client.post("/v1/customers", headers=ADMIN, json={"id": cid, "currency": "USD", "price_book": book,
                                                                    "billing": "postpaid"})
    assert made.status_code == 201, made.text
    await put_overrides(client, cid, datetime.now(UTC) - timedelta(hours=1),
                        discounts=[{"id": "half", "percent": "50.000000000000000001"}])
    sent = await client.post("/v1/usage-events", headers=ADMIN, json=[{
        "event_id": "huge", "customer_id": cid, "model": "model-a", "timestamp": utc(datetime.now(UTC)),
        "usage": {"input_tokens": 10**15 - 1}}])
    assert sent.status_code == 200, sent.text
    [rejected] = sent.json()["rejected"]
    assert rejected["code"] == "validation_error" and rejected["detail"].startswith("usage: a charge of ")
    held = await client.post("/v1/reservations", headers=ADMIN, json={
        "customer_id": cid, "request_id": "huge", "model": "model-a",
        "estimate": {"input_tokens": 10**15 - 1, "max_output_tokens": 0}})
    assert held.status_code == 422, held.text
    assert held.json()["code"] == "validation_error" and held.json()["fields"][0]["field"] == "estimate.input_tokens"
