"""A webhook dispatcher whose rounds fail (the database unreachable, a fan-out or claim that
errs) said so only in a WARNING line per poll: /metrics had the attempts, which stop as quietly
when no event is due as when nothing can be sent. Each round is now counted, `ok` or `error`."""
from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from api.webhooks import Dispatcher, DispatchSettings
from ledger.db import connect

WAIT_S = 30  # generous: what is asserted is that the rounds were counted, not how soon


def _rounds(result: str) -> float | None:
    return REGISTRY.get_sample_value("tokentill_webhook_rounds_total", {"result": result})


async def test_each_dispatcher_round_is_counted_ok_or_error(database_url):
    settings = DispatchSettings(poll_s=0.05)
    working = Dispatcher(connect(database_url, pool_size=2), settings)
    unreachable = Dispatcher(connect("postgresql://tokentill@127.0.0.1:1/none", pool_size=1, pool_timeout_s=2),
                             settings)
    working.start()
    assert _rounds("ok") is not None and _rounds("error") is not None  # there from the start, for alerts
    ok, errors = _rounds("ok") or 0.0, _rounds("error") or 0.0
    unreachable.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:  # until each has had a round: a fixed wait, on a loaded machine, may end before either has
        while not ((_rounds("ok") or 0.0) > ok and (_rounds("error") or 0.0) > errors):
            assert loop.time() - start < WAIT_S, f"rounds counted: ok {_rounds('ok')}, error {_rounds('error')}"
            await asyncio.sleep(0.05)
    finally:
        await working.stop()
        await unreachable.stop()
