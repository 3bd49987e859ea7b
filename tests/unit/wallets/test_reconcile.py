"""Reading payment processors' CSVs and matching them against top-ups: no database."""
from __future__ import annotations

import io

import pytest

from wallets.reconcile import Payment, PaymentFileError, read_payments, reconcile

SCALES = {"USD": 9, "EUR": 9}.get

DASHBOARD = """id,Type,Source,Amount,Fee,Net,Currency,Created (UTC),Available On (UTC),Description
txn_1,charge,ch_1,100.00,3.20,96.80,usd,2026-11-02 10:00,2026-11-04 00:00,top-up
txn_2,refund,re_1,-5.00,0.00,-5.00,usd,2026-11-03 10:00,2026-11-05 00:00,
txn_3,payment,py_2,20.50,0.89,19.61,eur,2026-11-03 11:00,2026-11-05 00:00,
txn_4,payout,po_1,-90.00,0.00,-90.00,usd,2026-11-04 10:00,2026-11-04 00:00,
"""
ITEMIZED = ("balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,"
            "source_id,description,charge_id,payment_intent_id\n") + """\
txn_1,2026-11-02 10:00:00,2026-11-04 00:00:00,usd,100.00,3.20,96.80,charge,ch_1,,ch_1,pi_1
txn_9,2026-11-02 11:00:00,2026-11-04 00:00:00,usd,-3.00,0.00,-3.00,refund,re_9,,ch_1,pi_1
"""
GENERIC = "reference,amount,currency,date\npay-1,100.00,USD,2026-11-02T10:00:00Z\npay-2,0.000000001,usd,\n"


def test_the_stripe_dashboard_export_keeps_charges_payments_and_refunds():
    paid, skipped = read_payments(io.StringIO(DASHBOARD), SCALES)
    assert [(p.reference, p.amount, p.currency, p.aliases) for p in paid] == [
        ("ch_1", 100 * 10**9, "USD", ("txn_1",)), ("re_1", -5 * 10**9, "USD", ("txn_2",)),
        ("py_2", 20_500_000_000, "EUR", ("txn_3",))]
    assert paid[0].at is not None and paid[0].at.isoformat() == "2026-11-02T10:00:00+00:00"
    assert dict(skipped) == {"payout": 1}


def test_the_stripe_itemized_report_answers_to_its_charge_and_payment_intent_ids():
    paid, skipped = read_payments(io.StringIO(ITEMIZED), SCALES)
    assert [(p.reference, p.aliases) for p in paid] == [("ch_1", ("ch_1", "pi_1", "txn_1")),
                                                       ("re_9", ("ch_1", "pi_1", "txn_9"))]
    assert not skipped
    topup = Payment("pi_1", 100 * 10**9, "USD", "entry 1")
    refund = Payment("re_9", -3 * 10**9, "USD", "entry 2", kind="grant_reversal")
    assert reconcile([topup, refund], paid).clean


def test_a_refund_row_listed_before_its_charge_does_not_take_the_charges_ids():
    """A refund row answers to its charge's charge_id and payment_intent_id too; a top-up under
    one of those ids is compared with the charge (cash in), wherever the refund sits in the file."""
    head, charge, refund = ITEMIZED.splitlines()
    paid, _ = read_payments(io.StringIO("\n".join((head, refund, charge)) + "\n"), SCALES)
    for reference in ("pi_1", "ch_1"):
        topup = Payment(reference, 100 * 10**9, "USD", "entry 1")
        refunded = Payment("re_9", -3 * 10**9, "USD", "entry 2", kind="grant_reversal")
        result = reconcile([topup, refunded], paid)
        assert result.clean, (reference, result.mismatched, result.only_in_ledger, result.only_in_file)


def test_a_refund_the_ledger_did_not_record_is_a_difference_not_skipped():
    """Was skipped, and the reconciliation clean, while the customer kept the credit of the cash
    that went back; a refund recorded (a top-up's reversal, `reference` its refund id) matches."""
    paid, _ = read_payments(io.StringIO(DASHBOARD), SCALES)
    topups = [Payment("ch_1", 100 * 10**9, "USD", "entry 1"), Payment("py_2", 20_500_000_000, "EUR", "entry 2")]
    result = reconcile(topups, paid)
    assert not result.clean and [p.reference for p in result.only_in_file] == ["re_1"]
    refund = Payment("re_1", -5 * 10**9, "USD", "entry 3", kind="grant_reversal")
    assert reconcile([*topups, refund], paid).clean
    short = reconcile([*topups, Payment("re_1", -4 * 10**9, "USD", "entry 3", kind="grant_reversal")], paid)
    assert [(m.reference, t.amount) for m, t in short.mismatched] == [("re_1", -5 * 10**9)]


def test_the_generic_layout_and_exact_amounts():
    paid, _ = read_payments(io.StringIO(GENERIC), SCALES)
    assert [(p.reference, p.amount, p.currency) for p in paid] == [("pay-1", 100 * 10**9, "USD"), ("pay-2", 1, "USD")]


@pytest.mark.parametrize("body, message", [
    ("what,ever\n1,2\n", "neither Stripe"),
    ("reference,amount,currency\npay-1,ten,USD\n", "line 2: not an amount"),
    ("reference,amount,currency\npay-1,1.0000000001,USD\n", "line 2: '1.0000000001' has more decimal places"),
    ("reference,amount,currency\n,1.00,USD\n", "line 2: no reference"),
    ("reference,amount,currency,date\npay-1,1.00,USD,yesterday\n", "line 2: not a time"),
    # Were tracebacks (decimal.InvalidOperation, decimal.Overflow, csv.Error), not exit 2:
    ("reference,amount,currency\npay-1,1.00,USD\npay-2,sNaN,USD\n", "line 3: not an amount"),
    ("reference,amount,currency\npay-1,1e999999,USD\n", "line 2: not an amount"),
    ("reference,amount,currency\npay-1,1.00,USD\npay-2," + "1" * 200_000 + ",USD\n", "line 3: "),
])
def test_a_file_that_cannot_be_read_says_where(body, message):
    with pytest.raises(PaymentFileError, match=message):
        read_payments(io.StringIO(body), SCALES)


@pytest.mark.parametrize("body", [
    "reference,amount,currency\n\npay-1,1.00,USD\npay-2,ten,USD\n",  # a blank line, which the reader skips
    'reference,amount,currency\n"pay\n1",1.00,USD\npay-2,ten,USD\n',  # a quoted cell over two lines
    "reference,amount,currency\r\npay-1,1.00,USD\r\n\r\npay-2,ten,USD\r\n",
])
def test_a_row_is_named_by_the_line_it_is_on_in_the_file(body):
    """pay-2 is on line 4 of each file (as an editor numbers them), and was named "line 3": rows
    were counted, not lines, so after a blank line or a cell with a line break every line named
    was the one before it."""
    with pytest.raises(PaymentFileError, match=r"^line 4: not an amount"):
        read_payments(io.StringIO(body, newline=""), SCALES)


@pytest.mark.parametrize("amount", ["1.000,50", "1,00", "10,0.00", "1e-999999999", "1E2", "1_000.00", "\u0661\u0660"])
def test_an_amount_not_written_as_a_plain_decimal_is_refused_rather_than_misread(amount):
    """Was read as another number: "1.000,50" (a thousand, written the European way) as 1.0005,
    since every comma was dropped; "1e-999999999" underflowed to 0. An amount is digits, an
    optional sign, commas only between groups of three digits, and a decimal point."""
    body = f'reference,amount,currency\npay-1,1.00,USD\npay-2,"{amount}",EUR\n'
    with pytest.raises(PaymentFileError, match="line 3: not an amount"):
        read_payments(io.StringIO(body), SCALES)


@pytest.mark.parametrize(("amount", "units"), [("1,000.50", 1_000_500_000_000), ("1,234,567", 1_234_567 * 10**9),
                                               ("-3.00", -3 * 10**9), ("+0.5", 5 * 10**8), (" 12 ", 12 * 10**9),
                                               # 29 significant digits: Decimal's context rounded the last one (…790)
                                               ("12345678901234567891.123456789", 12345678901234567891123456789)])
def test_plain_decimals_with_or_without_thousands_separators_are_read_exactly(amount, units):
    paid, _ = read_payments(io.StringIO(f'reference,amount,currency\npay-1,"{amount}",USD\n'), SCALES)
    assert [p.amount for p in paid] == [units]


@pytest.mark.parametrize("body", [
    'reference,amount,currency\npay-1,1.00,"USD\npay-2,2.00,USD\n',
    'reference,amount,currency\n"pay-1,1.00,USD\npay-2,2.00,USD\n',
    'reference,amount,currency\npay-1,"1.00"x,USD\n',
])
def test_a_quote_left_open_or_stray_is_a_file_it_cannot_read(body):
    """Was read on: a quote left open swallowed the rest of the file into one value (pay-2 went
    into pay-1's currency, "USD\npay-2,2.00,USD", and was never compared), or was named as a
    missing column ("no currency")."""
    with pytest.raises(PaymentFileError, match=r"line \d+: (unexpected end of data|',' expected after '\"')"):
        read_payments(io.StringIO(body, newline=""), SCALES)


def test_every_kind_of_difference_is_reported():
    ledger = [Payment("a", 100, "USD", "entry 1"), Payment("b", 200, "USD", "entry 2"),
              Payment("c", 300, "USD", "entry 3"), Payment("", 50, "USD", "entry 4"),
              Payment("e", 500, "USD", "entry 5")]
    paid = [Payment("a", 100, "USD", "line 2"), Payment("b", 199, "USD", "line 3"),
            Payment("d", 400, "USD", "line 4"), Payment("e", 500, "EUR", "line 5")]
    result = reconcile(ledger, paid)
    assert [m.reference for m, _ in result.matched] == ["a"]
    assert [(m.reference, t.amount, t.currency) for m, t in result.mismatched] == [("b", 199, "USD"), ("e", 500, "EUR")]
    assert [p.where for p in result.only_in_ledger] == ["entry 3", "entry 4"]
    assert [p.reference for p in result.only_in_file] == ["d"]
    assert not result.clean


def test_a_reference_twice_is_a_difference_even_when_amounts_agree():
    ledger = [Payment("a", 100, "USD", "entry 1"), Payment("a", 100, "USD", "entry 2")]
    paid = [Payment("a", 100, "USD", "line 2"), Payment("a", 100, "USD", "line 3")]
    result = reconcile(ledger, paid)
    assert result.duplicates == ["reference 'a' appears 2 times in the ledger",
                                 "reference 'a' appears 2 times in the file"]
    assert not result.clean


def test_a_file_that_is_not_utf8_says_where(tmp_path):
    """Was a UnicodeDecodeError traceback (the CLI opens the file as UTF-8), not exit 2."""
    path = tmp_path / "latin1.csv"
    path.write_bytes("reference,amount,currency,note\npay-1,1.00,USD,ok\npay-2,2.00,USD,caf\u00e9\n".encode("latin-1"))
    with path.open(newline="", encoding="utf-8-sig") as f, pytest.raises(PaymentFileError, match="not UTF-8"):
        read_payments(f, SCALES)


def _ledger(entry_id: int, reference: str, cents: int, customer: str = "acme", kind: str = "invoice_payment",
            currency: str = "USD") -> Payment:
    return Payment(reference, cents * 10**7, currency, f"entry {entry_id} (customer {customer})",
                   customer=customer, kind=kind, entry_id=entry_id)


def test_a_customers_invoice_payments_under_one_reference_are_one_receipt():
    ledger = [_ledger(12, "ch_9", 1000), _ledger(13, "ch_1", 500), _ledger(14, "ch_9", 300)]
    result = reconcile(ledger, [Payment("ch_9", 1300 * 10**7, "USD", "line 2"),
                                Payment("ch_1", 500 * 10**7, "USD", "line 3")])
    assert result.clean, result
    assert [(m.reference, m.amount, m.where) for m, _ in result.matched] == [
        ("ch_9", 1300 * 10**7, "entries 12, 14 (customer acme, invoice payments)"),
        ("ch_1", 500 * 10**7, "entry 13 (customer acme)")]
    # the sum is what must match: one of the parts alone in the file is a mismatch
    short = reconcile(ledger, [Payment("ch_9", 1000 * 10**7, "USD", "line 2"),
                               Payment("ch_1", 500 * 10**7, "USD", "line 3")])
    assert [(m.amount, t.amount) for m, t in short.mismatched] == [(1300 * 10**7, 1000 * 10**7)]


@pytest.mark.parametrize("ledger", [
    [_ledger(1, "ch_9", 1000, kind="topup"), _ledger(2, "ch_9", 300, kind="topup")],  # credit given twice
    [_ledger(1, "ch_9", 1000), _ledger(2, "ch_9", 300, customer="other")],  # two customers' invoices
    [_ledger(1, "ch_9", 1000, kind="topup"), _ledger(2, "ch_9", 300)],  # a top-up and an invoice payment
    [_ledger(1, "ch_9", 1000), _ledger(2, "ch_9", 300, currency="EUR")],  # two currencies
])
def test_other_payments_sharing_a_reference_are_still_duplicates(ledger):
    result = reconcile(ledger, [Payment("ch_9", 1300 * 10**7, "USD", "line 2")])
    assert result.duplicates == ["reference 'ch_9' appears 2 times in the ledger"] and not result.clean


ITEMIZED_FX = ("balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,source_id,"
               "customer_facing_amount,customer_facing_currency\n") + """\
txn_1,2026-11-02 10:00:00,usd,108.50,3.45,105.05,charge,ch_eur,100.00,eur
txn_2,2026-11-02 11:00:00,usd,20.00,0.88,19.12,charge,ch_usd,20.00,usd
txn_3,2026-11-02 12:00:00,usd,5.00,0.45,4.55,charge,ch_none,,
"""


def test_the_itemized_report_compares_what_the_customer_paid_in_its_own_currency():
    """Stripe's balance reports give `gross` in the account's settlement currency, after
    conversion: a euro customer's 100.00 EUR top-up is a row of 108.50 USD, so every top-up of a
    customer in another currency than the account's was a CURRENCY MISMATCH, and the ledger never
    reconciled. The itemized report's `customer_facing_amount` and `customer_facing_currency`
    are what the customer was charged; a row without them is read as before."""
    paid, _ = read_payments(io.StringIO(ITEMIZED_FX), SCALES)
    assert [(p.reference, p.amount, p.currency) for p in paid] == [
        ("ch_eur", 100 * 10**9, "EUR"), ("ch_usd", 20 * 10**9, "USD"), ("ch_none", 5 * 10**9, "USD")]
    ledger = [Payment("ch_eur", 100 * 10**9, "EUR", "entry 1"), Payment("ch_usd", 20 * 10**9, "USD", "entry 2"),
              Payment("ch_none", 5 * 10**9, "USD", "entry 3")]
    assert reconcile(ledger, paid).clean


def test_a_generic_files_time_written_with_a_lowercase_t_or_z_is_the_same_instant():
    """RFC 3339 5.6 lets `T` and `Z` be `t` and `z`, which the API and the CLI's times take (be34c7c);
    a payment file's `2026-11-02t10:00:00z` was "line 2: not a time" (datetime.fromisoformat takes a
    `t` but not a `z`): the whole reconciliation refused, exit 2."""
    body = ("reference,amount,currency,date\npay-1,100.00,USD,2026-11-02t10:00:00z\n"
            "pay-2,1.00,USD,2026-11-02T10:00:00Z\n")
    paid, _ = read_payments(io.StringIO(body), SCALES)
    assert [p.at.isoformat() for p in paid] == ["2026-11-02T10:00:00+00:00"] * 2


def test_a_window_takes_in_a_record_outside_it_only_for_a_match_of_the_same_direction():
    """November: a 100.00 USD top-up ch_1 (ledger 2026-11-30, Stripe's charge row the same day).
    December: its 3.00 USD refund re_9 (ledger and Stripe's refund row 2026-12-02), whose itemized
    row carries the charge's ids ch_1 and pi_1 too. December's window [12-01, 01-01) holds the
    refund on both sides: matched, and nothing else. November's [11-01, 12-01) holds the top-up on
    both sides: matched. A window takes in a record outside it whose reference matches one inside
    (a payment dated either side of the bound), but the refund row's alias ch_1 pulled November's
    top-up into December (matched against the refund row, -3.00 vs 100.00: AMOUNT MISMATCH, and
    the refund ONLY IN LEDGER), and the top-up ch_1 pulled the refund row into November (ONLY IN
    FILE): cash in matches cash in, a refund a refund."""
    from datetime import UTC, datetime

    from wallets.reconcile import windowed

    paid, _ = read_payments(io.StringIO(ITEMIZED.replace("2026-11-02 11:00:00", "2026-12-02 11:00:00")
                                        .replace("2026-11-02 10:00:00", "2026-11-30 10:00:00")), SCALES)
    ledger = [Payment("ch_1", 100 * 10**9, "USD", "entry 1", datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC)),
              Payment("re_9", -3 * 10**9, "USD", "entry 2", datetime(2026, 12, 2, 11, 0, 5, tzinfo=UTC))]
    nov, dec, jan = (datetime(y, m, 1, tzinfo=UTC) for y, m in ((2026, 11), (2026, 12), (2027, 1)))
    for (start, end), reference in (((dec, jan), "re_9"), ((nov, dec), "ch_1")):
        result = reconcile(*windowed(ledger, paid, start, end))
        assert result.clean and [m.reference for m, _ in result.matched] == [reference], (
            reference, result.mismatched, result.only_in_ledger, result.only_in_file)


def test_november_then_december_count_each_payment_once_whatever_side_of_the_bound_it_falls():
    """Six payments of one ledger and one itemized file covering both months, reconciled as
    November [11-01, 12-01) then December [12-01, 01-01):
    - ch_1 10.00 USD: Stripe 11-30 23:59:59, the ledger's top-up 12-01 00:00:01 (December's);
    - re_1 -3.00 USD: the ledger's refund 11-30 23:59:58, Stripe's refund row 12-01 00:00:02 (November's);
    - ch_2 5.00 USD in November on both sides, ch_3 7.00 USD in December on both sides;
    - ch_4 50.00 USD in November on both sides, its refund re_4 -20.00 USD in December on both
      sides (the refund row carries the charge's ids ch_4 and pi_4).
    A payment is the window's whose ledger record it is: November matched re_1, ch_2, ch_4 (3),
    December ch_1, ch_3, re_4 (3); each clean, each reference matched once over the two runs (6).
    Before, a record outside the window was taken in whenever a reference matched one inside:
    ch_1 was matched in November (its row inside) and again in December (its top-up inside), re_1
    likewise, 8 matches of 6 payments."""
    from collections import Counter
    from datetime import UTC, datetime

    from wallets.reconcile import windowed

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    rows = [("txn_1", "2026-11-30 23:59:59", "10.00", "charge", "ch_1", "ch_1", "pi_1"),
            ("txn_2", "2026-12-01 00:00:02", "-3.00", "refund", "re_1", "ch_0", "pi_0"),
            ("txn_3", "2026-11-15 10:00:00", "5.00", "charge", "ch_2", "ch_2", "pi_2"),
            ("txn_4", "2026-12-15 10:00:00", "7.00", "charge", "ch_3", "ch_3", "pi_3"),
            ("txn_5", "2026-11-20 10:00:00", "50.00", "charge", "ch_4", "ch_4", "pi_4"),
            ("txn_6", "2026-12-05 10:00:00", "-20.00", "refund", "re_4", "ch_4", "pi_4")]
    body = ITEMIZED.splitlines(keepends=True)[0] + "".join(
        f"{t},{when},2026-12-31 00:00:00,usd,{gross},0.00,{gross},{cat},{src},,{ch},{pi}\n"
        for t, when, gross, cat, src, ch, pi in rows)
    paid, _ = read_payments(io.StringIO(body), SCALES)
    usd = 10**9
    ledger = [Payment("ch_1", 10 * usd, "USD", "entry 1", at("2026-12-01 00:00:01")),
              Payment("re_1", -3 * usd, "USD", "entry 2", at("2026-11-30 23:59:58")),
              Payment("ch_2", 5 * usd, "USD", "entry 3", at("2026-11-15 10:00:05")),
              Payment("ch_3", 7 * usd, "USD", "entry 4", at("2026-12-15 10:00:05")),
              Payment("ch_4", 50 * usd, "USD", "entry 5", at("2026-11-20 10:00:05")),
              Payment("re_4", -20 * usd, "USD", "entry 6", at("2026-12-05 10:00:05"))]
    counted: Counter = Counter()
    expected = {"November": ["ch_2", "ch_4", "re_1"], "December": ["ch_1", "ch_3", "re_4"]}
    for name, start, end in (("November", at("2026-11-01"), at("2026-12-01")),
                             ("December", at("2026-12-01"), at("2027-01-01"))):
        result = reconcile(*windowed(ledger, paid, start, end))
        assert result.clean, (name, result.mismatched, result.only_in_ledger, result.only_in_file)
        assert sorted(m.reference for m, _ in result.matched) == expected[name], (name, result.matched)
        counted.update(m.reference for m, _ in result.matched)
    assert counted == Counter({p.reference: 1 for p in ledger})


def test_invoice_payments_of_one_charge_either_side_of_the_bound_are_one_receipt_of_the_first_s_window():
    """One Stripe charge pi_1 of 10.00 USD (dated 11-30 23:58:00) paid two of acme's invoices: the
    ledger records 4.00 at 11-30 23:59:00 and 6.00 at 12-01 00:00:30. They are one receipt of
    4.00 + 6.00 = 10.00, of its first part's time (November's). November's run matches it (10.00
    against 10.00); December's has nothing of it: clean, 0 matched. Before, December's run took the
    6.00 part in (inside) and the row by it, but not the 4.00 part (outside, its row outside too):
    AMOUNT MISMATCH, 6.00 against 10.00."""
    from datetime import UTC, datetime

    from wallets.reconcile import windowed

    usd = 10**9
    paid = [Payment("pi_1", 10 * usd, "USD", "line 2", datetime(2026, 11, 30, 23, 58, tzinfo=UTC))]
    ledger = [Payment("pi_1", 4 * usd, "USD", "entry 1", datetime(2026, 11, 30, 23, 59, tzinfo=UTC),
                      customer="acme", kind="invoice_payment", entry_id=1),
              Payment("pi_1", 6 * usd, "USD", "entry 2", datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC),
                      customer="acme", kind="invoice_payment", entry_id=2)]
    nov, dec, jan = (datetime(y, m, 1, tzinfo=UTC) for y, m in ((2026, 11), (2026, 12), (2027, 1)))
    november = reconcile(*windowed(ledger, paid, nov, dec))
    assert november.clean and [(m.amount, p.amount) for m, p in november.matched] == [(10 * usd, 10 * usd)]
    december = reconcile(*windowed(ledger, paid, dec, jan))
    assert december.clean and december.matched == [], (december.mismatched, december.only_in_file)
