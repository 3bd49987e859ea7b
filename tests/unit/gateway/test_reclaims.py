"""Gateway.reclaim (ab09a4e): the task that releases the hold of a reserve the ledger left
unanswered, once the ledger answers. Here the ledger never answers (a stand-in engine): a
gateway stopping cancels the task, whether it waits between asks or inside one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.gateway.config import GatewaySettings
from api.gateway.proxy import Gateway
from api.spool import Spool
from wallets.commands import Reserve


class Unanswered:
    """A ledger whose every submit fails as an unreachable database (or, `hang`, never returns)."""

    def __init__(self, hang: bool) -> None:
        self.hang, self.asked, self.first = hang, [], asyncio.Event()

    async def submit(self, command: Any) -> Any:
        self.asked.append(command)
        self.first.set()
        if self.hang:
            await asyncio.Event().wait()
        raise psycopg.OperationalError("connection failed: server closed the connection unexpectedly")


async def _nobody(token: str) -> Any:
    raise AssertionError("no key is looked up")


@pytest.mark.parametrize("hang", [False, True], ids=["between-asks", "inside-an-ask"])
async def test_a_gateway_stopping_while_a_reclaim_waits_for_the_ledger_cancels_it(tmp_path: Path, hang: bool):
    """A guard: the reclaim retries for up to the hold's TTL (600 s by default); a stop does not
    wait that long for it. Its first ask (after 0.5 s) is for the kept answer only, never a new hold."""
    ledger = Unanswered(hang)
    gw = Gateway(GatewaySettings(), ledger, _nobody, Spool(tmp_path / "spool"))
    gw.reclaim(
        Reserve(customer_id="c", request_id="r", request_hash=b"h", model="m", ttl_seconds=600), datetime.now(UTC)
    )
    (task,) = gw.reclaims
    await ledger.first.wait()
    assert [c.kept_only for c in ledger.asked] == [True]
    await gw.stop()
    assert task.cancelled() and gw.reclaims == set()
