"""Copies of a bulk call (usage events, settlements) sent at once under one Idempotency-Key are
answered what the first one answers. Each copy used to go ahead beside the first (its items are
idempotent one by one), and whichever copy kept its answer first gave it to all: the copies of a
first-ever usage event were answered {"accepted": 0, "duplicates": 1} about one run in four of
tests/api/wallets/test_idempotency_races.py once those copies really ran at once."""
from __future__ import annotations

import asyncio

from wallets.core.idempotency import OK, IdemKey, Replayed


async def test_a_copy_of_a_bulk_call_under_way_waits_for_its_answer_and_replays_it(kit):
    idem = IdemKey("test-scope", f"bulk-{kit.tag}", b"the same body")
    assert await kit.service.claim(idem) is None  # the first call: it goes ahead
    copy = asyncio.create_task(kit.service.claim(idem))
    await asyncio.sleep(0.5)  # several of its looks at the key: it is still waiting
    assert not copy.done(), "a copy went ahead beside the call under way"
    answer = {"json": '{"accepted":1,"duplicates":0,"rejected":[]}'}
    await kit.service.remember(idem, answer)
    assert await asyncio.wait_for(copy, 10) == Replayed(OK, answer)


async def test_a_claim_left_by_a_call_that_died_does_not_hold_its_retry_for_long(kit, monkeypatch):
    from wallets import service

    monkeypatch.setattr(service, "CLAIM_WAIT_S", 0.3)
    idem = IdemKey("test-scope", f"dead-{kit.tag}", b"body")
    assert await kit.service.claim(idem) is None  # a call that never answers
    assert await asyncio.wait_for(kit.service.claim(idem), 10) is None  # its retry goes ahead


async def test_a_copy_waits_for_the_first_answer_the_whole_claim_wait_not_half_of_it(kit, monkeypatch):
    """The wait is counted once: a copy of a call under way is held until its claim is
    CLAIM_WAIT_S old. It counted the time waited twice (the claim's age grows as it waits, and the
    wait was added to it), so a copy went ahead beside the first call after CLAIM_WAIT_S / 2."""
    import types

    from wallets import service

    waited = [0.0]  # the time the copy has waited, on a clock of the test's: no real sleep

    async def sleep(seconds: float) -> None:
        waited[0] += seconds
        kit.clock.advance(seconds=seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(service, "asyncio", types.SimpleNamespace(sleep=sleep))
    monkeypatch.setattr(service, "time", types.SimpleNamespace(monotonic=lambda: waited[0]))
    idem = IdemKey("test-scope", f"half-{kit.tag}", b"body")
    assert await kit.service.claim(idem) is None  # the first call, still under way
    assert await kit.service.claim(idem) is None  # its copy goes ahead once the claim is old enough
    assert waited[0] >= service.CLAIM_WAIT_S, f"the copy went ahead after {waited[0]:.1f} s"


async def test_a_call_that_ended_without_an_answer_does_not_hold_its_retries(kit, monkeypatch):
    """A bulk settle with an item answered 503 keeps no answer (the item may be sent again), nor
    does a usage-events call an unexpected error ended: its claim is released, so the retry the
    503 asks for goes ahead at once instead of waiting CLAIM_WAIT_S for an answer that never comes."""
    from wallets import service

    monkeypatch.setattr(service, "CLAIM_WAIT_S", 600.0)  # a retry held would wait 10 minutes
    idem = IdemKey("test-scope", f"released-{kit.tag}", b"body")
    assert await kit.service.claim(idem) is None
    await kit.service.release(idem)
    assert await asyncio.wait_for(kit.service.claim(idem), 10) is None
