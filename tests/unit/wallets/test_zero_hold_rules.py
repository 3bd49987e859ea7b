"""A hold of 0 on a prepaid wallet with nothing to draw. A call its prices make free (a price of
0, a 100 % discount) holds 0 and needs no credit (README, price overrides). A priced call with a
hold of 0 (`amount: "0"`, or an estimate of 0 input and 0 output tokens) started free on an empty
wallet, where any hold above 0 is refused: its usage then went to the receivable, past the
overdraft limit of 0. It is refused as insufficient funds; with credit to draw, a hold of 0 is
still taken."""
from __future__ import annotations

import dataclasses

import pytest
from wallet_memory import CID, MemoryWallet

from pricing.parse import parse_book
from wallets.commands import Reserve, Settle
from wallets.errors import InsufficientFundsError

FREE = parse_book({"id": "book-x", "currency": "USD", "versions": [{"effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
    {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0"}]}]})


def test_a_priced_call_with_a_hold_of_0_is_refused_on_an_empty_prepaid_wallet():
    m = MemoryWallet()
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    estimated = m.reserve(None, input_tokens=0, max_output_tokens=0)
    assert isinstance(estimated, InsufficientFundsError), estimated
    assert "nothing to draw" in str(given) and m.reserved == 0 and m.entries == []


def test_the_refusal_of_a_hold_of_0_is_kept_for_the_request_id_as_any_402():
    m = MemoryWallet()
    assert isinstance(m.reserve("0", request_id="r1"), InsufficientFundsError)
    m.top_up("1.00")
    assert isinstance(m.reserve("0", request_id="r1"), InsufficientFundsError)  # the same request: its answer


def test_a_hold_of_0_is_taken_where_the_wallet_has_credit_or_overdraft_to_draw():
    funded = MemoryWallet()
    funded.top_up("0.01")
    assert funded.reserve("0").reservation.amount == 0
    overdraft = MemoryWallet(overdraft="5.00")
    assert overdraft.reserve("0").reservation.amount == 0
    postpaid = MemoryWallet(billing="postpaid", overdraft=None)
    assert postpaid.reserve(None, input_tokens=0, max_output_tokens=0).reservation.amount == 0


def test_a_call_its_prices_make_free_holds_0_on_an_empty_wallet_and_settles_for_0():
    m = MemoryWallet(book=FREE)
    held = m.reserve(None, input_tokens=1000, max_output_tokens=500)
    assert held.reservation.amount == 0
    assert m.reserve("0").reservation.amount == 0
    settled = m.settle(held.reservation.id, input_tokens=1000, output_tokens=500)
    assert settled.charged == 0 and m.receivable == 0



def test_the_refusal_of_a_hold_of_0_on_an_overdraft_all_drawn_says_so_not_that_there_is_none():
    """Postpaid with a $1.00 overdraft limit: a $1.00 hold settled at $1.00 (1,000 input tokens
    at model-x's $1.00 per 1,000) leaves the receivable at 1.00, the limit all drawn and not past it.
    A hold of 0 then said "0.00 available, no overdraft", where the customer has one of 1.00."""
    m = MemoryWallet(billing="postpaid", overdraft="1.00")
    held = m.reserve("1.00")
    m.settle(held.reservation.id, input_tokens=1_000)
    assert m.receivable == 1_000_000_000  # 1.00 in atomic units (10^-9)
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    assert "nothing to draw (0.00 available, its overdraft limit 1.00 all drawn)" in str(given), str(given)



def test_the_refusal_of_a_hold_of_0_shows_the_wallet_s_currency_digits():
    """A yen wallet has no minor unit: README's "Digits shown" writes its empty balance "0", as
    every other refusal does (the detail said "0.00 available" whatever the currency)."""
    m = MemoryWallet()
    w = m.wallet
    m.loaded.wallets[CID] = dataclasses.replace(w, customer=dataclasses.replace(w.customer, currency="JPY"))
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    assert "nothing to draw (0 available, no overdraft)" in str(given), str(given)


SEARCHED = parse_book({"id": "book-s", "currency": "USD", "versions": [
    {"effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
        {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
        {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0"},
        {"id": "x-search", "model": "model-x", "token_type": "web_search", "price": "0.01"}]}]})


def test_a_hold_of_0_for_a_call_with_priced_tool_uses_is_refused_though_its_tokens_are_free():
    """A Reserve carries the per-call tools it may run (the gateway's `tool_uses`): a model whose
    tokens are free but whose web search is priced is not free. Given a hold of 0 with such uses,
    the check (one input and one output token) found it free and held 0 on an empty wallet."""
    m = MemoryWallet(book=SEARCHED)
    gateway = m.run(Reserve(customer_id=CID, request_id="g", request_hash=b"g", model="model-x", ttl_seconds=300,
                            amount=0, estimate={"source": "gateway", "input_tokens": 0, "max_output_tokens": 0}))
    assert gateway.reservation.amount == 0  # a gateway call declaring no tool runs none: its tokens are free
    given = m.reserve("0", tool_uses={"web_search": 1})
    assert isinstance(given, InsufficientFundsError), given
    estimated = m.reserve(None, input_tokens=10, max_output_tokens=10, tool_uses={"web_search": 1})
    assert isinstance(estimated, InsufficientFundsError), estimated
    assert m.reserved == 0


def test_a_call_that_cannot_declare_its_tools_is_not_free_where_the_book_prices_one():
    """A call that is not the gateway's (the HTTP API's reserve, `amount` or `estimate`) declares no
    tools, and its settle may report any (`web_search_calls`): with web search at $0.01 a call, a
    settle of 1 search charged $0.01 (10,000,000 atomic units) to the receivable past the overdraft
    limit of 0 after a hold of 0. Refused now, given or estimated."""
    m = MemoryWallet(book=SEARCHED)
    given = m.reserve("0")
    if not isinstance(given, InsufficientFundsError):  # the defect: what its settle charges, unheld
        settled = _settle_with(m, given.reservation.id, {"web_search": 1}, {})
        pytest.fail(f"held {given.reservation.amount}, settle charged {settled.charged}, receivable {m.receivable}")
    assert isinstance(m.reserve(None, input_tokens=10, max_output_tokens=10), InsufficientFundsError)
    assert m.reserved == 0 and m.receivable == 0


FREE_EMBEDDING = parse_book({"id": "book-e", "currency": "USD", "versions": [
    {"effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"}]}]})
PRICED_EMBEDDING = parse_book({"id": "book-p", "currency": "USD", "versions": [
    {"effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "x-emb", "model": "model-x", "token_type": "embedding", "price": "0.02"}]}]})


def test_a_free_model_its_book_prices_no_output_for_holds_0_on_an_empty_wallet():
    """An embeddings model priced at $0 per 1M input tokens, with no output rule (it produces none):
    1,000 input tokens cost 1,000 x $0 / 1M = $0.00, and any output its settle reported would be
    `unpriced_model`, never charged, so the call is free. The check priced one input and one output
    token, found the output unpriced and called the model not free: an empty prepaid wallet was
    refused 402 for it, where a book that also priced output at $0 held 0."""
    m = MemoryWallet(book=FREE_EMBEDDING)
    held = m.reserve(None, input_tokens=1000, max_output_tokens=0)
    assert held.reservation.amount == 0, held
    assert m.reserve("0").reservation.amount == 0
    settled = m.settle(held.reservation.id, input_tokens=1000)
    assert settled.charged == 0 and m.receivable == 0


def test_a_priced_model_its_book_prices_no_output_for_is_still_refused_a_hold_of_0():
    # $0.02 per 1M embedding tokens: not free, so a hold of 0 on an empty wallet is still refused
    m = MemoryWallet(book=PRICED_EMBEDDING)
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    estimated = m.reserve(None, input_tokens=0, max_output_tokens=0)
    assert isinstance(estimated, InsufficientFundsError), estimated
    assert m.reserved == 0


@pytest.mark.parametrize("priced", ["reasoning", "output_audio", "output_image", "citation"])
def test_a_model_free_on_input_whose_book_prices_an_output_side_type_but_not_output_is_not_free(priced):
    """Input at $0 and no `output` rule, but a rule pricing another output-side type at $10 per 1M
    (reasoning, audio or image output, citations: a model may spend its output on them): a settle
    reporting 1,000 such tokens charges 1,000 x $10 / 1M = $0.01, so a hold of 0 on an empty
    prepaid wallet must be refused, as any priced call's. The free-call check left every output-side
    type out once `output` itself was unpriced, held 0, and the settle's $0.01 went to the
    receivable, past the overdraft limit of 0."""
    book = parse_book({"id": "book-o", "currency": "USD", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
            {"id": "x-side", "model": "model-x", "token_type": priced, "price": "10"}]}]})
    m = MemoryWallet(book=book)
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    estimated = m.reserve(None, input_tokens=1000, max_output_tokens=0)
    assert isinstance(estimated, InsufficientFundsError), estimated
    assert m.reserved == 0 and m.receivable == 0


def test_a_model_whose_one_token_rounds_to_0_units_is_not_free():
    """Input and output at $0.0002 per 1M tokens: one of each is 2 x $0.0002 / 1M = $0.0000000004,
    0.4 of an atomic unit ($0.000000001), which rounds to 0, and the check called the model free
    from that rounded 0: a hold of 0 was taken on an empty prepaid wallet, and a settle of 1,000,000
    input and 1,000,000 output tokens charged $0.0002 + $0.0002 = $0.0004 (400,000 atomic units)
    to the receivable, past the overdraft limit of 0. Free is a price of 0, not a small one."""
    book = parse_book({"id": "book-t", "currency": "USD", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0.0002"},
            {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0.0002"}]}]})
    m = MemoryWallet(book=book)
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    estimated = m.reserve(None, input_tokens=1, max_output_tokens=1)  # 0.4 of a unit: a hold of 0
    assert isinstance(estimated, InsufficientFundsError), estimated
    assert m.reserved == 0 and m.receivable == 0


@pytest.mark.parametrize("priced", ["cached_input", "input_image", "cache_write"])
def test_a_model_free_on_input_and_output_whose_book_prices_another_prompt_type_is_not_free(priced):
    """Input and output at $0, but cached input (or image input, or a cache write) at $10 per 1M:
    a settle reporting 1,000 such tokens charges 1,000 x $10 / 1M = $0.01, so a hold of 0 on an
    empty prepaid wallet must be refused. The check priced one input and one output token only,
    called the call free, and the settle's $0.01 went to the receivable past the overdraft of 0."""
    book = parse_book({"id": "book-c", "currency": "USD", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
            {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0"},
            {"id": "x-other", "model": "model-x", "token_type": priced, "price": "10"}]}]})
    m = MemoryWallet(book=book)
    given = m.reserve("0")
    assert isinstance(given, InsufficientFundsError), given
    assert m.reserved == 0 and m.receivable == 0


def test_a_free_model_whose_book_prices_its_other_types_at_0_is_still_free():
    # input, cached input and reasoning at $0, no output rule: every type a settle charges is at $0
    free = parse_book({"id": "book-f", "currency": "USD", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
            {"id": "x-cached", "model": "model-x", "token_type": "cached_input", "price": "0"},
            {"id": "x-reasoning", "model": "model-x", "token_type": "reasoning", "price": "0"}]}]})
    assert MemoryWallet(book=free).reserve("0").reservation.amount == 0


def _reserve_with(m: MemoryWallet, request_id: str, **call) -> object:
    return m.run(Reserve(customer_id=CID, request_id=request_id, request_hash=repr(call).encode(), model="model-x",
                         ttl_seconds=300, prompt_tokens=1000, max_output_tokens=1000, **call))


def _settle_with(m: MemoryWallet, reservation_id: str, tokens: dict[str, int], dimensions: dict[str, str]) -> object:
    usage = {**tokens, "dimensions": dimensions}
    return m.run(Settle(customer_id=CID, reservation_id=reservation_id, request_hash=repr(usage).encode(),
                        tokens=tokens, usage=usage, final=True))


@pytest.mark.parametrize(("priced", "call"), [
    # the gateway's call leaving its tier to the provider: input and output $0 at every tier, but
    # cached input $10/M at priority only (at the standard tier it falls back to input's $0)
    ({"token_type": "cached_input", "match": {"service_tier": "priority"}}, {"chosen_by_provider": ("service_tier",)}),
    # the same, the call naming no tier (the HTTP API's): the provider's report still prices the settle
    ({"token_type": "cached_input", "match": {"service_tier": "priority"}}, {}),
    # an Anthropic call leaving tier and geography to the provider: output $10/M at priority in the
    # US only, which no variant setting one of them at a time matches
    ({"token_type": "output", "match": {"service_tier": "priority", "inference_geo": "us"}},
     {"chosen_by_provider": ("service_tier", "inference_geo")}),
])
def test_a_model_free_at_the_standard_tier_whose_provider_may_report_a_priced_one_is_not_free(priced, call):
    """A settle is rated at the tier (and geography) the provider's usage reports. Input and output
    at $0, the type in `priced` at $10/M where the provider reports the values it matches: a settle of
    1,000 such tokens reporting them charges 1,000 x $10 / 1M = $0.01 (10,000,000 atomic units) to
    the receivable past the overdraft limit of 0 after a hold of 0. The free check priced the call's
    other types at the dimensions as given (and input and output at one provider's value at a time),
    called the call free and held 0. Now 402; the same book at $0 there is free and settles for 0."""
    rules = [{"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
             {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0"}]

    def book(price: str) -> object:
        return parse_book({"id": "book-t", "currency": "USD", "versions": [
            {"effective_from": "2026-01-01T00:00:00Z", "format": 2,
             "rules": [*rules, {"id": "x-dear", "model": "model-x", "price": price, **priced}]}]})

    m = MemoryWallet(book=book("10"))
    held = _reserve_with(m, "r", **call)
    if not isinstance(held, InsufficientFundsError):  # the defect: what its settle charges, unheld
        settled = _settle_with(m, held.reservation.id, {priced["token_type"]: 1000}, priced["match"])
        pytest.fail(f"held {held.reservation.amount}, settle charged {settled.charged}, "
                    f"receivable {m.receivable}")
    assert m.reserved == 0 and m.receivable == 0
    free = MemoryWallet(book=book("0"))
    held = _reserve_with(free, "f", **call)
    assert held.reservation.amount == 0
    settled = _settle_with(free, held.reservation.id, {priced["token_type"]: 1000}, priced["match"])
    assert settled.charged == 0 and free.receivable == 0


def test_a_wallet_with_credit_holds_a_call_not_free_at_its_declared_prices_and_its_settle_charges_the_rest():
    """What an HTTP reserve holds on a wallet with credit (README, Reserve): the free check refuses
    only a hold of 0 on a wallet with nothing to draw; with credit the call is taken (201) and held
    at what it declares, its tokens at the dimensions it names and no per-call tool (it can declare
    none). Web search at $0.01 a call, tokens at $0: with $0.01 (10,000,000 units) of credit the
    reserve holds 0; a settle of 2 searches charges 2 x $0.01 = 20,000,000 units: 10,000,000 from
    the lot, the other 10,000,000 owed (a settle never fails). Likewise $0 at the standard tier and
    $10/M at priority: the reserve naming no tier holds 0, and a settle of 2,000 output tokens
    reporting priority charges 2,000 x $10 / 1M = 20,000,000 units, 10,000,000 of them owed."""
    searched = MemoryWallet(book=SEARCHED)
    searched.top_up("0.01")
    held = searched.reserve("0")
    assert held.reservation.amount == 0
    assert searched.reserve(None, input_tokens=10, max_output_tokens=10).reservation.amount == 0
    settled = _settle_with(searched, held.reservation.id, {"web_search": 2}, {})
    assert settled.charged == 20_000_000 and searched.receivable == 10_000_000

    tiered = MemoryWallet(book=parse_book({"id": "book-t", "currency": "USD", "versions": [
        {"effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
            {"id": "x-in", "model": "model-x", "token_type": "input", "price": "0"},
            {"id": "x-out", "model": "model-x", "token_type": "output", "price": "0"},
            {"id": "x-pri", "model": "model-x", "token_type": "output", "price": "10",
             "match": {"service_tier": "priority"}}]}]}))
    tiered.top_up("0.01")
    held = _reserve_with(tiered, "t")
    assert held.reservation.amount == 0
    settled = _settle_with(tiered, held.reservation.id, {"output": 2000}, {"service_tier": "priority"})
    assert settled.charged == 20_000_000 and tiered.receivable == 10_000_000
