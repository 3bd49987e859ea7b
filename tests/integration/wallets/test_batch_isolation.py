"""A wallet batch that fails for a reason other than a domain refusal finds its bad command by
halving (about 2*log2(n)+1 transactions, not n+1), and one the database cannot run at all
(it is unavailable) fails every command at once, without halving."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from wallet_kit import Kit, usd

from ledger.db import Database, RetriesExhaustedError, connect, is_unavailable
from wallets.commands import Reserve, ReserveResult
from wallets.engine import Engine

BATCH = 64


def _reserve(cid: str, request_id: str, **fields: Any) -> Reserve:
    return Reserve(customer_id=cid, request_id=request_id, request_hash=request_id.encode(), model="model-x",
                   ttl_seconds=300, amount=usd("0.01"), **fields)


def _counting(engine: Engine) -> list[int]:
    """The size of every transaction `engine` runs from here on."""
    sizes: list[int] = []
    run = engine.execute

    async def counted(commands, **kw):
        sizes.append(len(commands))
        return await run(commands, **kw)

    engine.execute = counted  # type: ignore[method-assign]
    return sizes


@pytest.mark.parametrize("bad_at", [0, 37, BATCH - 1])
async def test_one_command_the_database_refuses_is_found_by_halving(shared_kit: Kit, bad_at: int):
    kit = shared_kit
    cid = await kit.customer("iso")
    await kit.top_up(cid, "10")
    # A value only PostgreSQL refuses (the API's schema would stop it): a NUL in a dimension.
    commands = [_reserve(cid, f"{kit.tag}-{i}", dimensions={"feature": "bad\x00" if i == bad_at else "chat"})
                for i in range(BATCH)]
    sizes = _counting(kit.service.engine)
    outcomes = await asyncio.gather(*(kit.service.submit(c) for c in commands), return_exceptions=True)

    assert sizes[0] == BATCH  # all of them rode in one batch first
    assert len(sizes) <= 2 * math.log2(BATCH) + 1, sizes
    good = [o for i, o in enumerate(outcomes) if i != bad_at]
    assert all(isinstance(o, ReserveResult) for o in good), [o for o in good if not isinstance(o, ReserveResult)]
    assert isinstance(outcomes[bad_at], Exception) and not isinstance(outcomes[bad_at], ReserveResult)
    assert not is_unavailable(outcomes[bad_at])
    balances = await kit.balances(cid, platform=False)
    assert balances["iso.reserved"] == usd("0.01") * (BATCH - 1)


async def test_a_batch_the_database_cannot_run_fails_every_command_at_once(shared_kit: Kit):
    down = connect("postgresql://nobody@127.0.0.1:1/none", pool_size=1)  # nothing listens on port 1
    try:
        engine = Engine(down)
        sizes = _counting(engine)
        outcomes = await asyncio.gather(*(engine.submit(_reserve("acme", f"{shared_kit.tag}-{i}"))
                                          for i in range(BATCH)), return_exceptions=True)
    finally:
        await down.dispose()
    assert sizes == [BATCH]
    assert all(is_unavailable(o) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1  # the one failure, given to every command


async def test_a_batch_that_spent_its_retry_budget_fails_every_command_at_once(shared_kit: Kit, database_url):
    class Contended(Database):
        async def run(self, work, *, locks=()):
            raise RetriesExhaustedError("the database is too contended; try again")

    real = connect(database_url, pool_size=1)
    try:
        engine = Engine(Contended(real.engine))
        sizes = _counting(engine)
        outcomes = await asyncio.gather(*(engine.submit(_reserve("acme", f"{shared_kit.tag}-c{i}"))
                                          for i in range(BATCH)), return_exceptions=True)
    finally:
        await real.dispose()
    assert sizes == [BATCH]  # halving a contended batch would only add transactions
    assert all(isinstance(o, RetriesExhaustedError) for o in outcomes)
