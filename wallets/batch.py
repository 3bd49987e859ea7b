"""The shell around the wallet rules for one transaction: the loaded state, each command decided
by the pure core (wallets/core) and its decision followed in memory (so later commands in the
batch see it) and turned into rows, then the flush that makes them ready (accounts opened, entry
ids given) and the one statement that posts the entries (ledger_post) and writes the rows."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.accounts import open_accounts
from ledger.model import AccountSpec, JournalEntry
from ledger.posting import Outcome, PreparedPost, prepare_post
from pricing.books import PriceBook
from pricing.errors import wire_time
from pricing.money import minor_unit
from wallets import chart, store
from wallets.core import Decision, State, decide
from wallets.core import idempotency as answers
from wallets.core.alerts import alert_due, alerts
from wallets.core.billing import NOTED, add, entry_rollup, line_item
from wallets.core.commands import Command
from wallets.core.decision import (
    AdjustmentPosted,
    AnswerKept,
    BudgetCounted,
    ChargeAdjusted,
    ChargeRecorded,
    CreditNoteIssued,
    CustomerFlagged,
    InvoiceFinalized,
    LotOpened,
    LotRevoked,
    LotSwept,
    OutboxEvent,
    PaymentRecorded,
    PeriodAdvanced,
    ReservationChanged,
    ReservationExtended,
    ReservationOpened,
    TrueUpChargesGiven,
    TrueUpPosted,
    TrueUpsCorrected,
    UsageCounted,
    UsageEventRecorded,
)
from wallets.core.idempotency import Replayed
from wallets.core.rating import billing_period
from wallets.core.state import InvoiceDue, RulePaid, Unapplied
from wallets.errors import BODY_REFUSALS, NO_ANSWER_KEPT, ConflictError
from wallets.model import BudgetHold, Hold, Lot, Reservation

__all__ = ["Batch", "billing_period"]


# The entries that may post to a currency's rounding account (a close's, see wallets.core.invoicing;
# a credit note's, wallets.core.rerating).
ROUNDS = frozenset({"invoice_rounding", "volume_true_up", "rerate_adjustment"})
ROUNDING = chart.rounding_account("")
# The outcomes keep_answers keeps no answer for: one already kept (Replayed), and NO_ANSWER_KEPT
_NOT_TO_KEEP = (Replayed, *NO_ANSWER_KEPT)


def _dated(effect: Any, written: datetime) -> Any:
    """`effect` dated no later than `written` (Batch.written, when set): a lot the close opens (its
    true-up's, its rounding's credit) and a payment it records (apply_unapplied, apply_corrections)
    were dated at an early close's `until`, created in the future."""
    if type(effect) in (LotOpened, PaymentRecorded) and effect.created_at > written:
        return msgspec.structs.replace(effect, created_at=written)
    return effect


@dataclass(slots=True)
class Batch:
    now: datetime
    loaded: store.Loaded
    books: Mapping[str, PriceBook | None] = field(default_factory=dict)
    entries: list[JournalEntry] = field(default_factory=list)
    accounts: list[AccountSpec] = field(default_factory=list)
    platform_accounts: list[AccountSpec] = field(default_factory=list)  # opened if absent (see flush)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)  # results carrying an entry_key
    # (customer, period, book) -> rule -> units rated earlier in the period (loaded for tiered books)
    period_usage: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    counted: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # increments to write
    opened: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # new reservation -> customer, entry key
    changed: set[tuple[str, str]] = field(default_factory=set)  # (customer, reservation) to update
    flagged: set[str] = field(default_factory=set)  # customers whose alert flags changed
    periods: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # advanced: start, next close
    budget_deltas: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)  # window -> [used, held]
    budget_changed: set[tuple[str, str, str]] = field(default_factory=set)  # (customer, reservation, budget)
    # customer -> period -> rollup item -> (quantity, amount): loaded (closes), then followed
    rollups: dict[str, dict[str, dict[str, tuple[int, int]]]] = field(default_factory=dict)
    rolled: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)  # increments to write
    invoice_seqs: dict[tuple[str, int], int] = field(default_factory=dict)  # (issuer, year) -> last number
    invoices: dict[str, InvoiceDue] = field(default_factory=dict)
    rerates: dict[tuple[str, str], Any] = field(default_factory=dict)  # (customer, period) -> RerateInput
    credit_note_seqs: dict[tuple[str, int], int] = field(default_factory=dict)  # (issuer, year) -> last number
    unapplied: dict[str, tuple[Unapplied, ...]] = field(default_factory=dict)  # customer -> top-ups' (closes)
    corrections: dict[str, tuple[Unapplied, ...]] = field(default_factory=dict)  # customer -> re-rates' (closes)
    cash: dict[str, int] = field(default_factory=dict)  # customer -> its net cash in (cash refunds)
    refunds: dict[tuple[str, str], Any] = field(default_factory=dict)  # (customer, reference) -> RefundOnRecord
    topups: dict[tuple[str, str], Any] = field(default_factory=dict)  # (customer, reference) -> TopUpOnRecord
    reversals: dict[tuple[str, str], Any] = field(default_factory=dict)  # (customer, reference) -> ReversalOnRecord
    # closes: (customer, period) -> rule id -> (charge id, account, amount, ...) that paid what it rated
    rule_funding: dict[tuple[str, str], dict[str, tuple[RulePaid, ...]]] = field(default_factory=dict)
    rerated: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)  # closes: charges re-rated
    entry_ids: list[int] = field(default_factory=list)  # the entries' ids (given by flush), in order
    posting: PreparedPost | None = None  # the entries' ledger_post call (made by flush)
    pinned: dict[int, PriceBook | None] = field(default_factory=dict)  # id(command) -> its usage time's book
    # the clock of an early close (run `until` a time to come): an entry is dated when the ledger
    # records it, at the latest (they were dated at `until`, weeks ahead, so no journal or export
    # window up to the time they were written listed them); None: `now` dates them
    written: datetime | None = None

    def state(self, customer_id: str) -> State:
        return State(customer_id, self.loaded.wallets.get(customer_id), self.loaded.idempotency,
                     self.loaded.events, self.period_usage, self.rollups, self.invoice_seqs, self.invoices,
                     self.rerates, self.credit_note_seqs, self.unapplied,
                     self.corrections, self.cash, self.refunds, self.rule_funding, self.topups,
                     rerated=self.rerated, reversals=self.reversals)

    def apply(self, command: Command) -> Any:
        """Decide `command` and follow the decision, then the alerts it calls for; returns its
        result (or the answer kept for its Idempotency-Key), raises its refusal."""
        if command.idem is not None:
            try:
                kept = answers.check_key(self.loaded.idempotency.get((command.idem.scope, command.idem.key)),
                                         command.idem)
            except ConflictError:  # another body under the key: one that is invalid is refused as invalid
                refused = decide(self.state(command.customer_id), command, self.now, self.book_of(command)).outcome
                if refused.refused and isinstance(refused.body, BODY_REFUSALS):
                    raise refused.body from None
                raise
            if kept is not None:
                return kept
        decision = decide(self.state(command.customer_id), command, self.now, self.book_of(command))
        self.follow(decision)
        if decision.outcome.refused:
            raise decision.outcome.body
        self.alerts(command.customer_id)
        return decision.outcome.body

    def book_of(self, command: Command) -> PriceBook | None:
        """The book `command` rates with: its customer's, or, for usage from before the customer
        moved to another book, the one in force at its usage time (Engine._pinned_books)."""
        if self.pinned and id(command) in self.pinned:
            return self.pinned[id(command)]
        return self.books.get(command.customer_id)

    def keep_answers(self, commands: Sequence[Command], outcomes: Sequence[Any]) -> None:
        """Keep each Idempotency-Key's answer, refusals included but those of the request as sent
        (NOT_KEPT), with the batch's effects (once posted: answers carry entry ids)."""
        for command, outcome in zip(commands, outcomes, strict=True):
            idem = command.idem
            if idem is not None and not isinstance(outcome, _NOT_TO_KEEP) \
                    and (idem.scope, idem.key) not in self.loaded.idempotency:  # kept once: its first answer
                self.add("idempotency", answers.row(idem.scope, idem.key, idem.request_hash,
                                                    *answers.answer(outcome)))

    def alerts(self, customer_id: str) -> None:
        """Follow the alerts the wallet's state calls for now (balance low, blocked, unblocked)."""
        w = self.loaded.wallets.get(customer_id)
        if w is not None and alert_due(w, self.now):  # mostly not: then no State is built for it
            for effect in alerts(self.state(customer_id), w, self.now):
                _FOLLOW[type(effect)](self, effect, None)

    def follow(self, decision: Decision) -> None:
        key = decision.entry.key if decision.entry is not None else None
        if (written := self.written) is not None:  # an early close's lots and payments: dated when written
            decision = msgspec.structs.replace(decision, effects=tuple(_dated(e, written) for e in decision.effects))
        for effect in decision.effects:  # lots first: the entry's postings may credit them
            if type(effect) is LotOpened:
                self._lot_opened(effect, key, decision.entry.kind if decision.entry is not None else None)
        if decision.entry is not None:
            if decision.entry.kind in ROUNDS and any(p.account.startswith(ROUNDING) for p in decision.entry.postings):
                self.platform_accounts.append(chart.rounding_spec(decision.entry.postings[0].asset))
            posted = self._billed(decision)  # its period (in its metadata) is of the time it was decided at
            if self.written is not None and posted.occurred_at > self.written:
                posted = msgspec.structs.replace(posted, occurred_at=self.written)
            self.entries.append(posted)
            w = self.loaded.wallets[posted.customer_id]
            w.apply(posted.postings)
            # what it gave (or took) where closed lots' money went, for each: the next correction
            # in the batch takes from there at most what is left (store.load_payers)
            for code, units in posted.metadata.get("closed_lots", {}).items():
                if (lot := w.lots.get(code)) is not None and lot.closed_with is not None:
                    lot.closed_with += units
        else:
            self._unposted(decision)
        for effect in decision.effects:
            if type(effect) is not LotOpened:
                _FOLLOW[type(effect)](self, effect, key)
        if getattr(decision.outcome.body, "entry_key", None) is not None:
            self.results.append(decision.outcome.body)  # its entry id is known once posted

    def _billed(self, decision: Decision) -> JournalEntry:
        """The entry with the period it is billed in (in its metadata), and what it adds to that
        period's rollup: its lines (from its charge or true-up), what paid it, its postings."""
        entry = decision.entry
        assert entry is not None and entry.customer_id is not None
        w = self.loaded.wallets[entry.customer_id]
        c = w.customer
        priced = None
        for effect in decision.effects:
            if type(effect) in _PRICED:
                priced = effect
                break
        lines: list[tuple[str, Any]] = []
        if type(priced) is ChargeRecorded:
            period = c.billed_in(priced.occurred_at).label
            origin = billing_period(priced.occurred_at, c)
            lines = [(origin, line) for line in priced.lines]
        else:
            period = entry.metadata.get("period") or c.billed_in(entry.occurred_at).label
            if isinstance(priced, TrueUpPosted | AdjustmentPosted):  # a re-rate's: one per period of usage
                lines = [(e.period, line) for e in decision.effects if type(e) is type(priced) for line in e.lines]
        kinds = {code: lot.kind for code, lot in w.lots.items()}
        for effect in decision.effects:
            if type(effect) is LotOpened:
                kinds[effect.code] = effect.kind
        rollup = entry_rollup(c, entry, kinds, lines, priced.funding if priced is not None else ())
        if priced is not None and any(type(effect) is CreditNoteIssued for effect in decision.effects):
            # a note's part of what the receivable paid, whole minor units: the close rounds the rest.
            # One that moved a fraction (after a note of before notes were rounded, or that one) is
            # rounded with the period, as before: summed with whole ones, it made the sum a fraction
            # and whole_rounding then left none of it out (a whole note's money rounded again)
            receivable = chart.receivable_account(c.id)
            share = sum(units for account, units in priced.funding if account == receivable)
            if share % minor_unit(c.currency) == 0:
                add(rollup, NOTED, 0, share)
        self._roll(c.id, period, rollup)
        return entry.with_metadata({**entry.metadata, "period": period})

    def _unposted(self, decision: Decision) -> None:
        """A charge that moved no money (a 100 % discount, an allowance that paid it all, a price
        of 0), or a true-up or a re-rate whose lines net 0, posts no entry, but it is billed all the same: its
        lines (the usage at list price and what took it off) go to the rollup of its period."""
        for effect in decision.effects:
            if type(effect) is ChargeRecorded and effect.lines:
                c = self.loaded.wallets[effect.customer_id].customer
                origin, period = billing_period(effect.occurred_at, c), c.billed_in(effect.occurred_at).label
            elif type(effect) in (TrueUpPosted, AdjustmentPosted) and effect.lines:
                origin = period = effect.period  # a re-rate's lines netting 0: with the charges they correct
            else:
                continue
            items: dict[str, tuple[int, int]] = {}
            for line in effect.lines:
                add(items, line_item(origin, line), int(line["quantity"]), int(line["amount_units"]))
            self._roll(effect.customer_id, period, items)

    def _roll(self, customer_id: str, period: str, items: Mapping[str, tuple[int, int]]) -> None:
        held = self.rollups.setdefault(customer_id, {}).setdefault(period, {})
        rolled = self.rolled
        for item, qa in items.items():
            add(held, item, *qa)
            key = (customer_id, period, item)
            before = rolled.get(key)
            rolled[key] = qa if before is None else (before[0] + qa[0], before[1] + qa[1])

    def _invoice_finalized(self, effect: InvoiceFinalized, key: str | None) -> None:
        self.invoice_seqs[(effect.issuer, effect.year)] = effect.seq
        self.add("invoices", {
            "id": effect.invoice_id, "customer_id": effect.customer_id, "period": effect.period,
            "period_start": effect.period_start, "period_end": effect.period_end, "issuer": effect.issuer,
            "year": effect.year, "seq": effect.seq, "number": effect.number, "currency": effect.currency,
            "total": effect.total, "amount_due": effect.amount_due, "due_at": effect.due_at,
            "content": dict(effect.content), "entry_key": key, "finalized_at": effect.finalized_at})

    def _credit_note_issued(self, effect: CreditNoteIssued, key: str | None) -> None:
        self.credit_note_seqs[(effect.issuer, effect.year)] = effect.seq
        self.add("credit_notes", {
            "id": effect.credit_note_id, "customer_id": effect.customer_id, "invoice_id": effect.invoice_id,
            "rerate_id": effect.rerate_id, "kind": effect.content["kind"], "issuer": effect.issuer,
            "year": effect.year, "seq": effect.seq, "number": effect.number, "currency": effect.currency,
            "total": effect.total, "content": dict(effect.content), "entry_key": key, "issued_at": effect.issued_at})

    def _charge_adjusted(self, effect: ChargeAdjusted, key: str | None) -> None:
        self.add("charge_adjustments", {
            "charge_id": effect.charge_id, "corrected_version": effect.version,
            "overrides_version": effect.overrides_version, "allowance_moves": dict(effect.allowance_moves),
            "old_rules": dict(effect.old_rules), "new_rules": dict(effect.new_rules),
            "rerate_id": effect.rerate_id,
            "customer_id": effect.customer_id, "period": effect.period, "old_amount": effect.old_amount,
            "new_amount": effect.new_amount, "old_lines": [list(x) for x in effect.old_lines],
            "new_lines": [list(x) for x in effect.new_lines], "entry_key": key,
            "credit_note_id": effect.credit_note_id, "created_at": self.now})

    def _true_ups_corrected(self, effect: TrueUpsCorrected, key: str | None) -> None:
        self.add("rerate_true_ups", {
            "rerate_id": effect.rerate_id, "customer_id": effect.customer_id, "period": effect.period,
            "true_ups": [list(x) for x in effect.true_ups], "payer_rows": [list(x) for x in effect.payers],
            "created_at": self.now})

    def _true_up_charges_given(self, effect: TrueUpChargesGiven, key: str | None) -> None:
        # one row of arrays, unnested by the statement: a record of each charge as a JSON object was
        # 14.4 MB for 100,000 charges (0.3-0.7 s to build and dump, 0.5-1.0 s to parse)
        if effect.given:
            self.add("true_up_charges", {
                "customer_id": effect.customer_id, "period": effect.period, "rerate_id": effect.rerate_id,
                "created_at": self.now, "rules": [rule_id for rule_id, _, _ in effect.given],
                "charges": [charge_id for _, charge_id, _ in effect.given],
                "units": [units for _, _, units in effect.given]})
        if effect.payers:
            self.add("true_up_payers", {
                "customer_id": effect.customer_id, "period": effect.period, "rerate_id": effect.rerate_id,
                "charges": [charge_id for charge_id, _, _ in effect.payers],
                "payers": [payer for _, payer, _ in effect.payers], "units": [units for _, _, units in effect.payers]})

    def _period_advanced(self, effect: PeriodAdvanced, key: str | None) -> None:
        self.loaded.wallets[effect.customer_id].customer.open_period_start = effect.open_period_start
        self.periods[effect.customer_id] = (effect.open_period_start, effect.next_close_at)

    def _payment_recorded(self, effect: PaymentRecorded, key: str | None) -> None:
        invoice = self.invoices.get(effect.invoice_id)  # not there: the invoice its close just finalized
        if invoice is not None:  # its entry: the top-up's posted before, or this decision's (by its key)
            paid = {**invoice.payments, effect.reference: effect.amount}
            by = effect.entry_id if effect.entry_id is not None else key
            entries = {**invoice.entries, **({} if by is None else {effect.reference: by})}
            self.invoices[effect.invoice_id] = replace(invoice, payments=paid, entries=entries)
        row = {"id": effect.payment_id, "invoice_id": effect.invoice_id, "customer_id": effect.customer_id,
               "amount": effect.amount, "reference": effect.reference, "created_at": effect.created_at}
        if effect.entry_id is None:
            row["entry_key"] = key
        else:  # a top-up's payment of the receivable, posted earlier, applied now: no longer unapplied
            row["entry_id"] = effect.entry_id
            self.unapplied[effect.customer_id] = tuple(
                x if x.entry_id != effect.entry_id else replace(x, amount=x.amount - effect.amount)
                for x in self.unapplied.get(effect.customer_id, ()) if x.entry_id != effect.entry_id
                or x.amount > effect.amount)
        self.add("invoice_payments", row)

    def _lot_opened(self, effect: LotOpened, key: str | None, opened_by: str | None = None) -> None:
        self.accounts.append(chart.lot_spec(effect.customer_id, effect.lot_id, effect.currency))
        self.loaded.wallets[effect.customer_id].lots[effect.code] = Lot(
            effect.lot_id, effect.code, effect.kind, effect.granted, effect.priority, effect.expires_at,
            effect.created_at, 0, False, effect.reason, effect.reference, opened_by)
        self.add("lots", {"id": effect.lot_id, "customer_id": effect.customer_id, "kind": effect.kind,
                          "account_code": effect.code, "granted": effect.granted, "priority": effect.priority,
                          "expires_at": effect.expires_at, "reason": effect.reason, "reference": effect.reference,
                          "entry_key": key, "created_at": effect.created_at,
                          "paid_receivable": effect.paid_owed > 0})

    def _lot_swept(self, effect: LotSwept, key: str | None) -> None:
        self.loaded.wallets[effect.customer_id].lots[effect.code].swept = True
        self.add("lot_expiries", {"id": effect.lot_id, "expired_at": effect.expired_at, "amount": effect.amount,
                                  "entry_key": key})

    def _lot_revoked(self, effect: LotRevoked, key: str | None) -> None:
        self.loaded.wallets[effect.customer_id].lots[effect.code].revoked = True
        self.add("lot_revocations", {"id": effect.lot_id, "revoked_at": effect.revoked_at})

    def _reservation_opened(self, effect: ReservationOpened, key: str | None) -> None:
        self.loaded.wallets[effect.customer_id].reservations[effect.reservation_id] = Reservation(
            effect.reservation_id, effect.customer_id, effect.request_id, effect.request_hash, effect.model,
            effect.amount, chart.HELD, effect.created_at, effect.expires_at,
            [Hold(h.seq, h.account, h.amount) for h in effect.holds], dict(effect.dimensions),
            dict(effect.estimate) if effect.estimate is not None else None, hold_tokens=effect.hold_tokens)
        self.opened[effect.reservation_id] = (effect.customer_id, key)

    def _reservation_changed(self, effect: ReservationChanged, key: str | None) -> None:
        r = self.loaded.wallets[effect.customer_id].reservations[effect.reservation_id]
        r.status, r.captured, r.released, r.charged = effect.status, effect.captured, effect.released, effect.charged
        r.captures, r.closed_at = effect.captures, effect.closed_at
        self.changed.add((effect.customer_id, effect.reservation_id))

    def _reservation_extended(self, effect: ReservationExtended, key: str | None) -> None:
        self.loaded.wallets[effect.customer_id].reservations[effect.reservation_id].expires_at = effect.expires_at
        self.changed.add((effect.customer_id, effect.reservation_id))

    def _charge_recorded(self, effect: ChargeRecorded, key: str | None) -> None:
        customer = self.loaded.wallets[effect.customer_id].customer
        self.add("charges", {
            "customer_id": effect.customer_id, "reservation_id": effect.reservation_id, "event_id": effect.event_id,
            "request_id": effect.request_id, "seq": effect.seq, "capture_id": effect.capture_id,
            "final": effect.final, "request_hash": effect.request_hash, "model": effect.model,
            "occurred_at": effect.occurred_at, "usage": dict(effect.usage), "dimensions": dict(effect.dimensions),
            "price_book": effect.price_book, "price_version": effect.price_version, "lines": list(effect.lines),
            "charged": effect.charged, "from_hold": effect.from_hold, "from_lots": effect.from_lots,
            "from_receivable": effect.from_receivable, "released": effect.released,
            "funding": [list(x) for x in effect.funding], "entry_key": key,
            "period": customer.billed_in(effect.occurred_at).label})  # as its entry's or its rollup lines'

    def _usage_event_recorded(self, effect: UsageEventRecorded, key: str | None) -> None:
        self.loaded.events[(effect.customer_id, effect.event_id)] = effect.request_hash
        self.add("usage_events", {
            "event_id": effect.event_id, "customer_id": effect.customer_id, "request_hash": effect.request_hash,
            "model": effect.model, "occurred_at": effect.occurred_at, "usage": dict(effect.usage),
            "dimensions": dict(effect.dimensions), "entry_key": key})

    def _outbox_event(self, effect: OutboxEvent, key: str | None) -> None:
        payload = dict(effect.payload)
        # an early close's events (invoice.finalized, invoice.paid, the alerts it calls for) happened
        # when written, as its entry: their `created_at` said its `until`, weeks ahead
        if self.written is not None and isinstance(at := payload.get("created_at"), str) \
                and datetime.fromisoformat(at) > self.written:
            payload["created_at"] = wire_time(self.written)
        self.add("outbox", {"topic": effect.topic, "customer_id": effect.customer_id, "dedup_key": effect.dedup_key,
                            "payload": payload})

    def _budget_counted(self, effect: BudgetCounted, key: str | None) -> None:
        w = self.loaded.wallets[effect.customer_id]
        b = w.budgets.get(effect.budget_id)
        counts = [self.budget_deltas.setdefault((effect.budget_id, effect.window_start), [0, 0])]
        if b is not None:  # a deleted budget's windows still get back what its holds return
            counts.append(b.windows.setdefault(effect.window_start, [0, 0]))
        for c in counts:
            c[0] += effect.used
            c[1] += effect.held
        r = w.reservations.get(effect.reservation_id)
        if r is None:  # a usage event's count (on_usage): a record of its own, written once
            self.add("reservation_budgets", store.budget_hold_row(effect.reservation_id, BudgetHold(
                effect.budget_id, effect.window_start, effect.metric, effect.held, effect.used)))
            return
        if effect.opened:
            r.budget_holds[effect.budget_id] = BudgetHold(effect.budget_id, effect.window_start, effect.metric,
                                                          effect.held, effect.used)
            return
        bh = r.budget_holds[effect.budget_id]
        bh.held += effect.held
        bh.used += effect.used
        self.budget_changed.add((effect.customer_id, effect.reservation_id, effect.budget_id))

    def _customer_flagged(self, effect: CustomerFlagged, key: str | None) -> None:
        c = self.loaded.wallets[effect.customer_id].customer
        c.low_balance_alerted, c.blocked = effect.low_balance_alerted, effect.blocked
        self.flagged.add(effect.customer_id)

    def _answer_kept(self, effect: AnswerKept, key: str | None) -> None:
        self.add("idempotency", answers.row(effect.scope, effect.key, effect.request_hash, effect.code, effect.body))

    def _usage_counted(self, effect: UsageCounted, key: str | None) -> None:
        self._count(effect)

    def _count(self, effect: UsageCounted) -> None:
        key = (effect.customer_id, effect.period, effect.book_id)
        known = self.period_usage.setdefault(key, {})
        for rule_id, quantity in effect.quantities.items():
            known[rule_id] = known.get(rule_id, 0) + quantity
            self.counted[(*key, rule_id)] = self.counted.get((*key, rule_id), 0) + quantity

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    async def flush(self, conn: AsyncConnection) -> None:
        """Make the batch ready to write: open its accounts, give each entry its id (allocated
        with the load), and turn what was followed into rows, each naming its entry by id."""
        if self.platform_accounts:  # a currency whose customers predate its rounding account
            await open_accounts(conn, self.platform_accounts)
        await store.open_accounts(conn, self.accounts)
        spare = self.loaded.entry_ids
        if len(spare) < len(self.entries):  # more entries than commands, or no ids loaded
            spare = spare + [r[0] for r in await conn.exec_driver_sql(
                "SELECT nextval('journal_entries_id_seq') FROM generate_series(1, %s)",
                (len(self.entries) - len(spare),))]
        self.entry_ids, self.loaded.entry_ids = spare[:len(self.entries)], spare[len(self.entries):]
        self.posting = await prepare_post(conn, self.entries, self.entry_ids)
        ids = {entry.key: entry_id for entry, entry_id in zip(self.entries, self.entry_ids, strict=True)}
        for table_rows in self.rows.values():
            for row in table_rows:
                if "entry_key" in row:
                    row["entry_id"] = ids.get(row.pop("entry_key") or "")
        for result in self.results:
            result.entry_id = ids.get(result.entry_key or "", result.entry_id)
        for cid, rid in sorted(self.changed):
            if rid not in self.opened:
                self.add("reservation_updates", store.reservation_update(self.loaded.wallets[cid].reservations[rid]))
        for rid, (cid, entry_key) in self.opened.items():
            r = self.loaded.wallets[cid].reservations[rid]
            self.add("reservations", store.reservation_row(r, ids.get(entry_key or "")))
            self.rows.setdefault("holds", []).extend(store.hold_rows(r))
        self._budget_rows()
        self._lot_marks()
        for cid in sorted(self.flagged | self.periods.keys()):  # one row each: see store's "customers"
            self.add("customers", store.customer_update(self.loaded.wallets[cid], cid in self.flagged,
                                                        self.periods.get(cid)))
        self._delta_rows()

    def _delta_rows(self) -> None:
        """What the batch added to each customer's billing periods, one row per customer and
        period (migration 0029): the rollup items and the usage counters, folded later."""
        deltas: dict[tuple[str, str], dict[str, Any]] = {}

        def delta(cid: str, period: str) -> dict[str, Any]:
            row = deltas.get((cid, period))
            if row is None:
                row = deltas[(cid, period)] = {"customer_id": cid, "period": period, "items": [], "quantities": [],
                                               "amounts": [], "books": [], "rules": [], "counts": []}
            return row

        for (cid, period, item), (quantity, amount) in self.rolled.items():
            if quantity or amount:
                row = delta(cid, period)
                row["items"].append(item)
                row["quantities"].append(quantity)
                row["amounts"].append(amount)
        for (cid, period, book_id, rule_id), quantity in self.counted.items():
            if quantity:
                row = delta(cid, period)
                row["books"].append(book_id)
                row["rules"].append(rule_id)
                row["counts"].append(quantity)
        if deltas:
            self.rows.setdefault("period_deltas", []).extend(deltas.values())

    def _lot_marks(self) -> None:
        """Each loaded lot's `empty` mark (migration 0072) as its balance ends the batch: a new lot's
        in its row, a grant's revoked in whole in its revocation's, each other's that crossed 0 in
        a row of its own (one UPDATE of a row per statement: a second would be dropped). A lot
        swept keeps its row (final: `lots_guard`); no load reads it as live. Every posting to a lot
        is a wallet batch's, to a lot the batch holds (a lot not loaded is swept to the rules, see
        legs.return_target), so its balance here is its account's; verify names a lot marked empty
        that holds money (wallets.audit.lots_match_accounts)."""
        new = {row["id"]: row for row in self.rows.get("lots", ())}
        revoked = {row["id"]: row for row in self.rows.get("lot_revocations", ())}
        swept = {row["id"] for row in self.rows.get("lot_expiries", ())}
        for w in self.loaded.wallets.values():
            for lot in w.lots.values():
                empty = lot.balance <= 0
                if lot.id in new:
                    new[lot.id]["empty"] = empty
                elif lot.id in revoked:
                    revoked[lot.id]["empty"] = empty
                elif not lot.swept and lot.id not in swept and empty != lot.empty:
                    self.add("lot_marks", {"id": lot.id, "empty": empty})

    def _budget_rows(self) -> None:
        for (budget_id, start), (used, held) in sorted(self.budget_deltas.items()):
            self.add("budget_windows", {"budget_id": budget_id, "window_start": start, "used": used, "held": held})
        for rid, (cid, _) in self.opened.items():
            holds = self.loaded.wallets[cid].reservations[rid].budget_holds.values()
            self.rows.setdefault("reservation_budgets", []).extend(store.budget_hold_row(rid, bh) for bh in holds)
        for cid, rid, budget_id in sorted(self.budget_changed):
            if rid not in self.opened:
                bh = self.loaded.wallets[cid].reservations[rid].budget_holds[budget_id]
                self.add("reservation_budget_updates", store.budget_hold_row(rid, bh))

    async def write(self, conn: AsyncConnection) -> None:
        """Post the entries and write the rows in one statement (one round trip): the rows' entry
        ids were allocated before, and their foreign keys are checked when the statement ends."""
        assert self.posting is not None, "flush the batch before writing it"
        post = (self.posting.sql, self.posting.params) if self.entries else None
        statement = store.write_statement(self.rows, first=post)
        if statement is None:
            return
        rows = (await conn.exec_driver_sql(*statement)).all()
        if post is None:
            return
        for result, entry_id in zip(self.posting.results(rows), self.entry_ids, strict=True):
            if result.outcome is not Outcome.POSTED or result.entry_id != entry_id:
                # Every account a command touches is under its customer's lock: this is a bug.
                raise RuntimeError(f"entry {result.key} was {result.outcome.value} ({result.detail})")


_PRICED = (ChargeRecorded, TrueUpPosted, AdjustmentPosted)  # effects whose lines an entry's rollup adds
_FOLLOW: dict[type, Any] = {
    LotOpened: Batch._lot_opened, LotSwept: Batch._lot_swept, LotRevoked: Batch._lot_revoked,
    ReservationOpened: Batch._reservation_opened,
    ReservationChanged: Batch._reservation_changed, ReservationExtended: Batch._reservation_extended,
    ChargeRecorded: Batch._charge_recorded,
    UsageEventRecorded: Batch._usage_event_recorded, UsageCounted: Batch._usage_counted,
    BudgetCounted: Batch._budget_counted, OutboxEvent: Batch._outbox_event,
    CustomerFlagged: Batch._customer_flagged, AnswerKept: Batch._answer_kept,
    TrueUpPosted: lambda batch, effect, key: None,  # its lines went into the rollup with its entry
    InvoiceFinalized: Batch._invoice_finalized, PeriodAdvanced: Batch._period_advanced,
    PaymentRecorded: Batch._payment_recorded, CreditNoteIssued: Batch._credit_note_issued,
    ChargeAdjusted: Batch._charge_adjusted, TrueUpsCorrected: Batch._true_ups_corrected,
    TrueUpChargesGiven: Batch._true_up_charges_given,
    AdjustmentPosted: lambda batch, effect, key: None,  # its lines went into the rollup with its entry
}  # how the shell follows each effect: in memory, and as the rows a flush writes
