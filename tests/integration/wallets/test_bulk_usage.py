"""A bulk call's usage events (POST /v1/usage-events) run as one transaction per lane and round:
not one per flush of the queues. The same event twice in one call is one event and a duplicate;
a refused event is refused alone; an event the database refuses is found by halving its lane's
batch while the lane's other events and the other lanes post."""
from __future__ import annotations

from wallet_kit import Kit

from ledger.errors import LedgerError
from pricing.errors import PricingError
from wallets.commands import RecordUsage, UsageResult
from wallets.core.results import UsageResult as CoreUsageResult


def _event(kit: Kit, cid: str, event_id: str, *, model: str = "model-x", feature: str = "chat") -> RecordUsage:
    tokens = {"input": 1000, "output": 500}
    return RecordUsage(customer_id=cid, event_id=event_id, request_hash=repr((tokens, feature)).encode(),
                       model=model, occurred_at=kit.clock.now, tokens=tokens, usage=tokens,
                       dimensions={"feature": feature})


def _counting(kit: Kit) -> list[int]:
    sizes: list[int] = []
    run = kit.service.engine.execute

    async def counted(commands, **kw):
        sizes.append(len(commands))
        return await run(commands, **kw)

    kit.service.engine.execute = counted  # type: ignore[method-assign]
    return sizes


async def test_a_bulk_call_runs_one_transaction_per_lane_and_round(kit: Kit):
    customers = [await kit.customer(f"bulk{n}", billing="postpaid", overdraft=None) for n in range(12)]
    lanes = {await kit.service.engine.lane_of(cid) for cid in customers}
    assert len(lanes) > 1  # the test means something only across lanes
    events = [_event(kit, customers[n % 12], f"e{n}") for n in range(240)]
    events.append(_event(kit, customers[0], "e0"))  # the same event again, in the same call
    events.append(_event(kit, customers[1], "zzz", model="model-zzz"))  # no price: refused alone
    sizes = _counting(kit)

    outcomes = await kit.service.submit_many(events)

    assert len(sizes) == len(lanes) + 1  # one per lane, and a second round for the repeated event
    assert sum(sizes) == len(events)
    assert all(isinstance(o, UsageResult) and not o.duplicate for o in outcomes[:240])
    assert isinstance(outcomes[240], CoreUsageResult) and outcomes[240].duplicate
    assert isinstance(outcomes[241], LedgerError | PricingError) and outcomes[241].code == "unpriced_model"
    # 1,000 in at $1.00 per 1,000 and 500 out at $2.00 per 1,000: $2.00 an event, 20 events per customer
    balances = await kit.balances(*customers, platform=False)
    assert all(balances[f"bulk{n}.receivable"] == 40 * 10**9 for n in range(12)), balances
    assert (await kit.verify()).ok


async def test_an_event_the_database_refuses_is_found_by_halving_its_lanes_batch(kit: Kit):
    customers = [await kit.customer(f"half{n}", billing="postpaid", overdraft=None) for n in range(8)]
    events = [_event(kit, customers[n % 8], f"h{n}") for n in range(64)]
    # A value only PostgreSQL refuses (the API's schema would stop it): a NUL in a dimension.
    events[13] = _event(kit, customers[13 % 8], "h13", feature="bad\x00")

    outcomes = await kit.service.submit_many(events)

    assert isinstance(outcomes[13], Exception) and not isinstance(outcomes[13], LedgerError | PricingError)
    assert all(isinstance(o, UsageResult) for i, o in enumerate(outcomes) if i != 13)
    again = await kit.service.submit_many([_event(kit, customers[n % 8], f"h{n}") for n in range(64) if n != 13])
    assert all(isinstance(o, UsageResult) and o.duplicate for o in again)  # every other event was posted
