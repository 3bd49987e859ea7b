"""The one idempotency module: answers kept as a code and a body, replayed or refused as a
conflict; rows kept before answers had codes still replay as they were."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from wallet_memory import CID, MemoryWallet, usd

from pricing.errors import UnpricedModelError
from wallets.core import idempotency
from wallets.core.idempotency import CODED, IdemKey, Replayed
from wallets.errors import ConflictError, InsufficientFundsError
from wallets.store import StoredResponse


@dataclass
class Kept:
    request_hash: bytes
    status: int
    body: Any


def test_an_answer_is_kept_as_a_code_and_a_body_never_a_status():
    row = idempotency.row("http:key_1", "k", b"h", "reserved", {"id": "res_1"})
    assert row["status"] == CODED and row["response"] == {"code": "reserved", "body": {"id": "res_1"}}
    kept = Kept(b"h", row["status"], row["response"])
    assert idempotency.check_key(kept, IdemKey("http:key_1", "k", b"h")) == Replayed("reserved", {"id": "res_1"})


def test_the_same_key_with_another_request_is_a_conflict():
    kept = Kept(b"h", CODED, {"code": "ok", "body": {}})
    with pytest.raises(ConflictError) as raised:
        idempotency.check_key(kept, IdemKey("s", "k", b"other"))
    assert raised.value.context == {"key": "k"} and raised.value.code == "idempotency_conflict"
    assert idempotency.check_key(None, IdemKey("s", "k", b"h")) is None


def test_an_answer_kept_before_codes_replays_its_status_and_text():
    legacy = Kept(b"h", 402, {"json": '{"code":"insufficient_funds"}'})
    replay = idempotency.check_key(legacy, IdemKey("s", "k", b"h"))
    assert replay == Replayed("replayed", legacy.body, 402)


def test_a_refusal_is_kept_with_what_a_client_may_see_of_it():
    refused = InsufficientFundsError("short", customer_id="acme", internal=object())
    assert idempotency.answer(refused) == ("insufficient_funds", {"detail": "short", "customer_id": "acme"})
    unpriced = UnpricedModelError("no rule", model="m")
    assert idempotency.answer(unpriced) == ("unpriced_model", {"detail": "no rule", "model": "m"})


def test_a_reservation_request_id_kept_before_codes_still_replays():
    m = MemoryWallet()
    m.top_up("5.00")
    first = m.reserve("1.00", request_id="old")
    summary = first.reservation.as_dict()
    scope = f"reserve:{CID}"
    m.loaded.idempotency[(scope, "new")] = StoredResponse(b"h", 201, summary)  # as 0008 kept them
    m.loaded.idempotency[(scope, "refused")] = StoredResponse(
        b"h", 402, {"code": "insufficient_funds", "detail": "a hold of 9.00 USD exceeds …"})
    again = m.reserve("1.00", request_id="new", body=b"h")
    assert again.code == "replayed" and again.reservation == first.reservation
    refusal = m.reserve("9.00", request_id="refused", body=b"h")
    assert isinstance(refusal, InsufficientFundsError) and refusal.detail.startswith("a hold of 9.00")
    assert m.reserved == usd("1.00")
