"""After every command a batch asks whether the wallet crossed a line (balance low, blocked or
unblocked). The answer is mostly no, and then no wallet State is built to ask it; when it is
yes, the alerts are what they always were."""
from __future__ import annotations

import pytest
from wallet_memory import MemoryWallet

from wallets.batch import Batch
from wallets.core.alerts import alert_due, alerts


@pytest.fixture
def states(monkeypatch) -> list[str]:
    """The customers a Batch built a State for, one item per State."""
    built: list[str] = []
    state = Batch.state

    def counted(self, customer_id):
        built.append(customer_id)
        return state(self, customer_id)

    monkeypatch.setattr(Batch, "state", counted)
    return built


def test_a_usage_event_that_crosses_no_line_builds_one_state_for_its_decision(states):
    m = MemoryWallet(billing="postpaid", overdraft=None)
    for n in range(3):
        m.usage_event(f"e{n}", input_tokens=1000, output_tokens=500)
    assert len(states) == 3  # one for each decision, none for the alerts
    assert m.outbox == [] and m.receivable == 3 * (1 * 10**9 + 1 * 10**9)  # $1.00 in + $1.00 out each


def test_crossing_a_line_still_alerts_once(states):
    m = MemoryWallet(low="1.50")
    m.top_up("2.00")
    m.usage_event("e1", input_tokens=1000)  # $1.00: $1.00 left, under $1.50
    m.usage_event("e2", input_tokens=100)  # $0.10 more: still low, alerted already
    topics = [row["topic"] for row in m.outbox]
    assert topics.count("balance.low") == 1
    assert m.wallet.customer.low_balance_alerted


@pytest.mark.parametrize("low, alerted, overdraft, receivable, blocked", [
    (None, False, None, 0, False), ("1.50", False, "0", 0, False), ("1.50", True, "0", 0, False),
    ("0.50", True, "0", 0, False), ("0.50", False, "1.00", 2 * 10**9, False), (None, False, "1.00", 2 * 10**9, True),
    (None, False, "1.00", 0, True)])
def test_an_alert_is_due_exactly_when_alerts_has_effects(low, alerted, overdraft, receivable, blocked):
    m = MemoryWallet(low=low, overdraft=overdraft)
    m.top_up("1.00")
    w = m.wallet
    w.customer.low_balance_alerted, w.customer.blocked, w.receivable = alerted, blocked, receivable
    batch = Batch(m.now, m.loaded, {})
    assert alert_due(w, m.now) == bool(alerts(batch.state(w.customer.id), w, m.now))
