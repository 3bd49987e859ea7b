"""A keyed budget creation called as the route calls it (BudgetService.create with the request's
IdemKey): the answer kept for this very body is replayed first, whatever the rules refuse since it
was kept; another body under the key is refused by the rules (422) before it is told it conflicts
(409), and a valid other body conflicts. The rule is the service's, not the route's (acadff6 put it
in POST /v1/budgets alone)."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from wallet_kit import Kit

from wallets.budgets import BudgetSpec
from wallets.core import budgets as rules
from wallets.core.budgets import BudgetView
from wallets.core.idempotency import CREATED, IdemKey, Replayed
from wallets.errors import ConflictError, WalletValidationError


@pytest.mark.parametrize("window", ["minute", "lifetime"])
async def test_a_budget_kept_under_its_key_before_a_rule_refused_its_body_replays_as_kept(
        shared_kit: Kit, monkeypatch, window: str):
    """Before e391396 a minute or lifetime budget took a time_zone, and was kept under its key."""
    kit = shared_kit
    cid = await kit.customer(f"kept-{window}")
    spec = BudgetSpec(cid, window, "tokens", 1000, time_zone="Asia/Tokyo")
    idem = IdemKey("test-scope", f"tz-{window}-{kit.tag}", b"the first body")
    with monkeypatch.context() as old:  # kept when no rule refused it (Asia/Tokyo is a zone)
        old.setattr(rules, "validate", lambda *spec: None)
        first = await kit.service.budgets.create(spec, idem)
    assert isinstance(first, BudgetView)
    again = await kit.service.budgets.create(spec, idem)
    assert isinstance(again, Replayed) and again.code == CREATED, again
    assert again.body["budget"]["id"] == first.budget.id
    # another body under the key: refused by the rules if it is refused (limit 999, the same time_zone) ...
    with pytest.raises(WalletValidationError) as refused:
        await kit.service.budgets.create(BudgetSpec(cid, window, "tokens", 999, time_zone="Asia/Tokyo"),
                                         IdemKey(idem.scope, idem.key, b"another body"))
    assert refused.value.context["fields"][0]["field"] == "time_zone"
    # ... and told it conflicts if it could be carried out (limit 999, no time_zone)
    with pytest.raises(ConflictError):
        await kit.service.budgets.create(BudgetSpec(cid, window, "tokens", 999),
                                         IdemKey(idem.scope, idem.key, b"a valid other body"))
    made = await kit.db.read(lambda conn: conn.execute(text(
        "SELECT count(*) FROM budgets WHERE customer_id = :c"), {"c": cid}))
    assert made.scalar_one() == 1  # the first alone: nothing more written
