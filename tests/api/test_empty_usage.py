"""A usage object that gives no count at all (`{}`, every count null, a service tier alone) is a
client bug, most likely a provider's usage that was lost on the way: it is refused as 422
`validation_error` naming `usage`, and nothing is written (the reservation stays held; a usage
event is rejected on its own, the others of its batch accepted). Before, it was taken as a call
that used nothing: the hold released in full and a charge of 0 recorded, or a usage event of 0
whose id could never be sent again with its real usage (a conflict). A call that really used
nothing says so with explicit zeros, which are still accepted.

Book: model-a input $10.00 per 1M tokens, output $20.00 per 1M."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from api.client_reservations import Reservation
from api.routes import inputs
from pricing.normalize import normalize_gemini
from tests.api.apps import book_customer

NO_COUNT = [{}, {"input_tokens": None, "output_tokens": None}, {"service_tier": "flex"}]
ZEROS = {"input_tokens": 0, "output_tokens": 0}


@pytest.fixture
async def customer(client: AsyncTestClient, tag: str) -> str:
    cid = await book_customer(client, f"empty-{tag}", billing="prepaid")
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    return cid


async def _held(client: AsyncTestClient, cid: str, request_id: str) -> str:
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": request_id,
                                                       "model": "model-a", "amount": "1.00"})
    assert held.status_code == 201, held.text
    return held.json()["id"]


def _refused_on_usage(response) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error"
    assert [f["field"] for f in body["fields"]] == ["usage"], body


@pytest.mark.parametrize("usage", NO_COUNT, ids=["empty", "nulls", "tier-only"])
async def test_a_settle_with_no_count_is_refused_and_the_hold_stays(client, customer, tag, usage):
    rid = await _held(client, customer, f"r-{tag}")
    _refused_on_usage(await client.post(f"/v1/reservations/{rid}/settle", json={"usage": usage, "final": True}))
    view = (await client.get(f"/v1/reservations/{rid}")).json()
    assert (view["status"], view["charged"], view["released"], view["charges"]) == ("held", "0.00", "0.00", [])
    # the same reservation settled for what it used: 1,000 input tokens at $10/M = $0.01
    settled = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": {"input_tokens": 1000}})
    assert settled.status_code == 200, settled.text
    assert (settled.json()["charged"], settled.json()["released"]) == ("0.01", "0.99")


async def test_a_settle_with_explicit_zeros_is_a_call_that_used_nothing(client, customer, tag):
    rid = await _held(client, customer, f"z-{tag}")
    settled = await client.post(f"/v1/reservations/{rid}/settle", json={"usage": ZEROS})
    assert settled.status_code == 200, settled.text
    assert (settled.json()["status"], settled.json()["charged"], settled.json()["released"]) == (
        "settled", "0.00", "1.00")


async def test_the_bulk_settle_refuses_that_item_alone(client, customer, tag):
    empty, used = await _held(client, customer, f"b1-{tag}"), await _held(client, customer, f"b2-{tag}")
    answer = await client.post("/v1/settlements", json=[
        {"reservation_id": empty, "usage": {}}, {"reservation_id": used, "usage": {"output_tokens": 1000}}])
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["results"]
    assert (first["status"], first["body"]["code"], [f["field"] for f in first["body"]["fields"]]) == (
        422, "validation_error", ["usage"])
    assert (second["status"], second["body"]["charged"]) == (200, "0.02")  # 1,000 output tokens at $20/M
    assert (await client.get(f"/v1/reservations/{empty}")).json()["status"] == "held"


async def test_a_usage_event_with_no_count_is_rejected_alone_and_its_id_stays_free(client, customer, tag):
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")

    def event(name: str, usage: dict) -> dict:
        return {"event_id": f"{name}-{tag}", "customer_id": customer, "model": "model-a", "timestamp": at,
                "usage": usage}

    sent = await client.post("/v1/usage-events", json=[
        event("empty", {}), event("nulls", NO_COUNT[1]), event("real", {"input_tokens": 1000}),
        event("zeros", ZEROS)])
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert sorted((r["event_id"], r["code"]) for r in body["rejected"]) == [
        (f"empty-{tag}", "validation_error"), (f"nulls-{tag}", "validation_error")]
    assert all("usage" in r["detail"] for r in body["rejected"])
    # nothing was written under the refused ids: the trace knows none, and the real usage is taken
    assert (await client.get(f"/v1/audit/charges/empty-{tag}")).status_code == 404
    again = await client.post("/v1/usage-events", json=[event("empty", {"input_tokens": 2000})])
    assert again.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    # $0.01 + $0 + $0.02 charged in all
    wallet = (await client.get(f"/v1/customers/{customer}/wallet")).json()
    assert wallet["available"] == "9.97", wallet


async def test_a_usage_event_whose_usage_is_refused_under_a_kept_event_id_is_refused_as_such(client, customer, tag):
    """Event e of 1,000 input tokens accepted (at $10.00 per 1M: $0.01). e sent again with a
    usage that is refused ({}: no count; an input_tokens of -1) was rejected idempotency_conflict,
    the kept id looked up because its usage was refused (so that a body kept before a rule
    tightened is answered a duplicate) and found with another body; now validation_error naming
    usage, and input_tokens, as under a new id (validation first, as a settle under another's key since 3a57a92).
    e again as sent is a duplicate, e with 2,000 tokens still idempotency_conflict. Charged once:
    10.00 - 0.01 = 9.99 available."""
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    event = {"event_id": f"e-{tag}", "customer_id": customer, "model": "model-a", "timestamp": at,
             "usage": {"input_tokens": 1000}}
    first = await client.post("/v1/usage-events", json=[event])
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text
    again = await client.post("/v1/usage-events", json=[
        {**event, "usage": {}}, {**event, "usage": {"input_tokens": -1}}, event,
        {**event, "usage": {"input_tokens": 2000}}])
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["accepted"], body["duplicates"]) == (0, 1), body
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (0, "validation_error"), (1, "validation_error"), (3, "idempotency_conflict")], body
    assert [r["detail"].split(":")[0] for r in body["rejected"][:2]] == ["usage", "input_tokens"], body
    assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["available"] == "9.99"


async def test_a_usage_event_refused_for_its_rating_under_a_kept_event_id_is_told_it_conflicts(client, tag):
    """Guard (passed before). Rating refusals depend on the price book and the customer at the time,
    not on the body alone, so another body under a kept event id is idempotency_conflict whatever
    its rating says: the id is spent for good, and a client told unpriced_model, once a price is
    added, would be told the conflict. Customer C (prepaid, $10.00, max_charge_per_request $1.00,
    a book pricing model-a at $10.00 per 1M input): event e, 1,000 input tokens of model-a, $0.01,
    accepted. Then e with model-zzz (no rule prices it) and e with 200,000 input tokens (200,000 x
    $10/M = $2.00 > $1.00) are idempotency_conflict; the same bodies under new ids n1 and n2 are
    unpriced_model and implausible_usage; e as sent is a duplicate. A version pricing model-zzz
    too (from an hour ago, before the events' time): e with model-zzz is still idempotency_conflict,
    n1 is accepted (1,000 x $10/M = $0.01). 10.00 - 0.01 - 0.01 = 9.98 available."""
    cid = await book_customer(client, f"rated-{tag}", billing="prepaid", max_charge_per_request="1.00")
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    now = datetime.now(UTC)
    event = {"event_id": f"e-{tag}", "customer_id": cid, "model": "model-a", "usage": {"input_tokens": 1000},
             "timestamp": (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")}
    unpriced, implausible = {"model": "model-zzz"}, {"usage": {"input_tokens": 200_000}}
    first = await client.post("/v1/usage-events", json=[event])
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, first.text

    async def sent(*events: dict) -> tuple[int, int, list[tuple[int, str]]]:
        body = (await client.post("/v1/usage-events", json=list(events))).json()
        return body["accepted"], body["duplicates"], [(r["index"], r["code"]) for r in body["rejected"]]

    assert await sent({**event, **unpriced}, {**event, **implausible}, {**event, "event_id": f"n1-{tag}", **unpriced},
                      {**event, "event_id": f"n2-{tag}", **implausible}, event) == (
        0, 1, [(0, "idempotency_conflict"), (1, "idempotency_conflict"), (2, "unpriced_model"),
               (3, "implausible_usage")])
    version = {"id": cid, "currency": "USD", "effective_from": (now - timedelta(hours=1)).isoformat(),
               "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                         {"id": "zzz", "model": "model-zzz", "token_type": "input", "price": "10.00"}]}
    assert (await client.post("/v1/price-books", json=version)).status_code == 201
    assert await sent({**event, **unpriced}, {**event, "event_id": f"n1-{tag}", **unpriced}) == (
        1, 0, [(0, "idempotency_conflict")])
    assert (await client.get(f"/v1/customers/{cid}/wallet")).json()["available"] == "9.98"


async def test_a_settle_refused_for_its_rating_under_another_settle_s_key_is_told_it_conflicts(client, tag):
    """Guard (passed before), the settle's twin of the above: a $0.50 hold settled (not final) under
    key k with 1,000 input tokens ($0.01); under k, 200,000 input tokens (200,000 x $10/M = $2.00,
    past the customer's $1.00 max_charge_per_request) is 409 idempotency_conflict, and without a
    key 422 implausible_usage. The hold charged $0.01 once."""
    cid = await book_customer(client, f"rated-s-{tag}", billing="prepaid", max_charge_per_request="1.00")
    assert (await client.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"})).status_code == 201
    held = await client.post("/v1/reservations", json={"customer_id": cid, "request_id": f"r-{tag}",
                                                       "model": "model-a", "amount": "0.50"})
    path, key = f"/v1/reservations/{held.json()['id']}/settle", {"Idempotency-Key": f"k-{tag}"}
    first = await client.post(path, json={"usage": {"input_tokens": 1000}, "final": False}, headers=key)
    assert first.status_code == 200, first.text
    past = {"usage": {"input_tokens": 200_000}, "final": False}
    answers = [await client.post(path, json=past, headers=headers) for headers in (key, {})]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [
        (409, "idempotency_conflict"), (422, "implausible_usage")], [a.text for a in answers]
    assert (await client.get(f"/v1/reservations/{held.json()['id']}")).json()["charged"] == "0.01"


GEMINI_SNAKE = {"prompt_token_count": 1000, "candidates_token_count": 500, "total_token_count": 1500}


@pytest.mark.parametrize("metadata", [{}, GEMINI_SNAKE, {"totalTokenCount": 1500}],
                         ids=["empty", "snake-case", "total-only"])
async def test_a_gemini_usage_with_no_count_is_refused_and_the_hold_stays(client, customer, tag, metadata):
    """A `gemini_usage` that gives none of Gemini's counts (`promptTokenCount`,
    `candidatesTokenCount`, ...): `{}`, or usageMetadata as google-genai's `model_dump()` writes it,
    in snake_case, whose names the reader does not know, or a total alone. Before, each was a call
    that used nothing: settled 200, charged 0.00 and the $1.00 hold released in full, though the
    snake-case one reports 1,000 prompt and 500 output tokens: 1,000 x $10/M + 500 x $20/M =
    $0.01 + $0.01 = $0.02 unbilled. Now 422 validation_error naming `gemini_usage`, the hold kept;
    the same usage in Gemini's own names settles at $0.02 and releases $0.98; a usage event of it is
    rejected alone, the other charged."""
    rid = await _held(client, customer, f"g-{tag}")
    refused = await client.post(f"/v1/reservations/{rid}/settle", json={"gemini_usage": metadata, "final": True})
    assert refused.status_code == 422, refused.text
    assert (refused.json()["code"], [f["field"] for f in refused.json()["fields"]]) == (
        "validation_error", ["gemini_usage"])
    view = (await client.get(f"/v1/reservations/{rid}")).json()
    assert (view["status"], view["charged"], view["released"]) == ("held", "0.00", "0.00")
    camel = {"promptTokenCount": 1000, "candidatesTokenCount": 500, "totalTokenCount": 1500}
    settled = await client.post(f"/v1/reservations/{rid}/settle", json={"gemini_usage": camel})
    assert settled.status_code == 200, settled.text
    assert (settled.json()["charged"], settled.json()["released"]) == ("0.02", "0.98")
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    sent = (await client.post("/v1/usage-events", json=[
        {"event_id": f"{name}-{tag}", "customer_id": customer, "model": "model-a", "timestamp": at,
         "gemini_usage": usage} for name, usage in (("bad", metadata), ("good", camel))])).json()
    assert (sent["accepted"], [(r["event_id"], r["code"]) for r in sent["rejected"]]) == (
        1, [(f"bad-{tag}", "validation_error")])
    wallet = (await client.get(f"/v1/customers/{customer}/wallet")).json()
    assert wallet["available"] == "9.96", wallet  # 10.00 - 0.02 - 0.02


def test_the_sdk_refuses_to_record_no_usage_at_once():
    """`Reservation.record()` with nothing would settle `{"usage": {}}` when the call ends, a
    refusal far from the bug; it is a ValueError where it is made."""
    reservation = Reservation.__new__(Reservation)  # record() reads nothing the constructor sets
    with pytest.raises(ValueError, match="no usage"):
        reservation.record()
    reservation.record(input_tokens=0, output_tokens=0)  # explicit zeros: a call that used nothing
    assert reservation._usage == {"usage": ZEROS}


@pytest.mark.parametrize("counts", [{"usage": {"input_tokens": 10, "output_tokens": 5}},
                                    {"input_tokens": "10"}, {"input_tokens": 1.5}, {"input_tokens": True}])
def test_the_sdk_refuses_a_count_that_is_not_a_whole_number_at_once(counts):
    """`record(usage={...})` (a guess at the keyword) was taken as a canonical count named `usage`
    and settled `{"usage": {"usage": {...}}}` when the block ended: a 422 far from the bug, and with
    background settles a record filed in `<spool>.rejected`. A count that is not an int is a
    TypeError where it is made, naming it."""
    reservation = Reservation.__new__(Reservation)
    name = next(iter(counts))
    with pytest.raises(TypeError, match=name):
        reservation.record(**counts)
    reservation.record(input_tokens=10, output_tokens=5)
    assert reservation._usage == {"usage": {"input_tokens": 10, "output_tokens": 5}}


BAD_USAGE = [
    {"prompt_tokens": 100, "completion_tokens": 20},  # OpenAI's names given as canonical counts
    {"input_tokens": -1, "output_tokens": 20},
    {"input_tokens": 10**16},
    {"openai_usage": {"prompt_tokens": 100, "completion_tokens": -20}},
    {"anthropic_usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": -5}},
    {"gemini_usage": {"prompt_token_count": 1000, "candidates_token_count": 500}},  # the Python SDK's dump
]


@pytest.mark.parametrize("recorded", BAD_USAGE, ids=["openai-names", "negative", "too-many", "openai-negative",
                                                      "anthropic-negative", "gemini-snake-case"])
async def test_usage_the_server_refuses_is_refused_by_record_at_once(client, customer, tag, recorded):
    """Usage the server refuses (a name it does not know, a negative count) was taken by
    `record()` and settled when the block ended: a 422 there, far from the bug, with the hold
    left until it expired (the call never billed), or with background settles a record filed in
    `<spool>.rejected`. `record()` now checks it as the server does, a ValueError naming the field."""
    rid = await _held(client, customer, f"bad-{tag}")
    form, value = next(iter(recorded.items())) if "_usage" in next(iter(recorded)) else ("usage", recorded)
    answer = await client.post(f"/v1/reservations/{rid}/settle", json={form: value, "final": True})
    assert answer.status_code == 422, answer.text  # the server's word on it
    reservation = Reservation.__new__(Reservation)
    field = next(f["field"] for f in answer.json()["fields"])
    with pytest.raises(ValueError, match=field.rsplit(".", 1)[-1]):
        reservation.record(**recorded)


def _read_as_before_9bf37b7(monkeypatch) -> None:
    """The server before 9bf37b7: a gemini_usage giving none of Gemini's counts read as zeros."""
    def zeros_when_none(metadata):
        return normalize_gemini({"promptTokenCount": 0, **metadata})
    monkeypatch.setitem(inputs.USAGE_FORMS, "gemini_usage", zeros_when_none)


async def test_a_settle_kept_before_gemini_usage_was_checked_replays_its_answer(client, customer, tag, monkeypatch):
    """A settle of `{"gemini_usage": {}}` taken before 9bf37b7 (as a call that used nothing:
    charged 0.00, the $1.00 hold released 1.00) and retried under its Idempotency-Key after the
    upgrade was answered 422 naming `gemini_usage`, the usage checked before the key was looked
    up: the client, told its settle failed, would settle that reservation again. Now the key is
    looked up first: the retry replays the kept 200 (Idempotent-Replayed: true; charged 0.00,
    released 1.00), and only a settle under a new key (another reservation) is refused 422, its
    $1.00 hold kept. The wallet: 10.00 - 1.00 held = 9.00 available."""
    rid, new = await _held(client, customer, f"k-{tag}"), await _held(client, customer, f"n-{tag}")
    body, key = {"gemini_usage": {}, "final": True}, {"Idempotency-Key": f"settle-{tag}"}
    with monkeypatch.context() as before:
        _read_as_before_9bf37b7(before)
        first = await client.post(f"/v1/reservations/{rid}/settle", json=body, headers=key)
    assert (first.status_code, first.json()["charged"], first.json()["released"]) == (200, "0.00", "1.00")
    retried = await client.post(f"/v1/reservations/{rid}/settle", json=body, headers=key)
    assert (retried.status_code, retried.headers.get("idempotent-replayed")) == (200, "true"), retried.text
    assert retried.json() == first.json()
    refused = await client.post(f"/v1/reservations/{new}/settle", json=body, headers={"Idempotency-Key": f"new-{tag}"})
    assert (refused.status_code, [f["field"] for f in refused.json()["fields"]]) == (422, ["gemini_usage"])
    assert (await client.get(f"/v1/reservations/{new}")).json()["status"] == "held"
    assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["available"] == "9.00"


async def test_a_bulk_settle_kept_before_gemini_usage_was_checked_replays_its_answer(client, customer, tag,
                                                                                    monkeypatch):
    """As the single settle, in `POST /v1/settlements`: the item of `{"gemini_usage": {}}` under
    `idempotency_key` k, taken before 9bf37b7 (200, charged 0.00, released 1.00), sent again in
    a new call beside a new item of the same usage: the retried item was 422 naming
    `gemini_usage`. Now it replays its kept 200 (replayed: true, the same body), and the new
    item alone is 422, its $1.00 hold kept: 10.00 - 1.00 = 9.00 available."""
    rid, new = await _held(client, customer, f"bk-{tag}"), await _held(client, customer, f"bn-{tag}")
    kept = {"reservation_id": rid, "gemini_usage": {}, "idempotency_key": f"k-{tag}"}
    with monkeypatch.context() as before:
        _read_as_before_9bf37b7(before)
        first = (await client.post("/v1/settlements", json=[kept])).json()["results"][0]
    assert (first["status"], first["body"]["charged"], first["body"]["released"]) == (200, "0.00", "1.00")
    answer = await client.post("/v1/settlements", json=[kept, {"reservation_id": new, "gemini_usage": {}}])
    assert answer.status_code == 200, answer.text
    again, refused = answer.json()["results"]
    assert (again["status"], again["replayed"], again["body"]) == (200, True, first["body"]), again
    assert (refused["status"], [f["field"] for f in refused["body"]["fields"]]) == (422, ["gemini_usage"])
    assert (await client.get(f"/v1/reservations/{new}")).json()["status"] == "held"
    assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["available"] == "9.00"


async def test_a_usage_event_kept_before_gemini_usage_was_checked_is_a_duplicate(client, customer, tag, monkeypatch):
    """The usage event {"event_id": e, "gemini_usage": {}} accepted before 9bf37b7 (a call that
    used nothing: 0 tokens, $0.00 charged) and sent again after the upgrade was rejected
    validation_error naming gemini_usage, its usage checked before its id was looked up, where
    `duplicates: 1` is due (the client, told it was refused, would send it again for ever). Now the
    kept event is looked up first: the resend is a duplicate; the same id with another body whose
    usage is refused (model-b for model-a) is validation_error, as that usage under a new id is
    (it was idempotency_conflict: validation first, see the test above). Nothing is charged:
    10.00 - 0.00 = 10.00 available."""
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    event = {"event_id": f"e-{tag}", "customer_id": customer, "model": "model-a", "timestamp": at,
             "gemini_usage": {}}
    with monkeypatch.context() as before:
        _read_as_before_9bf37b7(before)
        first = (await client.post("/v1/usage-events", json=[event])).json()
    assert first == {"accepted": 1, "duplicates": 0, "rejected": []}
    again = await client.post("/v1/usage-events", json=[
        event, {**event, "model": "model-b"}, {**event, "event_id": f"new-{tag}"}])
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["accepted"], body["duplicates"]) == (0, 1), body
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "validation_error"), (2, "validation_error")], body
    assert all("gemini_usage" in r["detail"] for r in body["rejected"]), body
    assert (await client.get(f"/v1/audit/charges/new-{tag}")).status_code == 404
    assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["available"] == "10.00"


async def test_a_keyless_final_settle_kept_before_gemini_usage_was_checked_replays_its_answer(client, customer, tag,
                                                                                            monkeypatch):
    """As the keyed settle, with no Idempotency-Key: a final settle is known by its reservation,
    and the same final body sent again replays its first answer (the core's final-hash replay).
    `{"gemini_usage": {}}` settled before 9bf37b7 (a call that used nothing: charged 0.00, the
    $1.00 hold released 1.00), sent again after it, was 422 naming `gemini_usage`: its usage was
    refused before the reservation was read. Now the reservation's kept final answers it (200,
    Idempotent-Replayed: true, the same body), in `POST /v1/settlements` too (replayed: true,
    under the item's derived key, kept nowhere); the same usage as a capture (final: false) with no
    capture id, kept nowhere, is 422 naming `gemini_usage`, and so is a settle of it on a new
    reservation, whose $1.00 hold stays: 10.00 - 1.00 = 9.00 available."""
    rid, new = await _held(client, customer, f"kl-{tag}"), await _held(client, customer, f"nl-{tag}")
    body = {"gemini_usage": {}, "final": True}
    with monkeypatch.context() as before:
        _read_as_before_9bf37b7(before)
        first = await client.post(f"/v1/reservations/{rid}/settle", json=body)
    assert (first.status_code, first.json()["charged"], first.json()["released"]) == (200, "0.00", "1.00")
    assert "idempotent-replayed" not in first.headers
    retried = await client.post(f"/v1/reservations/{rid}/settle", json=body)
    assert (retried.status_code, retried.headers.get("idempotent-replayed")) == (200, "true"), retried.text
    assert retried.json() == first.json()
    bulk = (await client.post("/v1/settlements", json=[{"reservation_id": rid, **body}])).json()["results"][0]
    assert (bulk["status"], bulk["replayed"], bulk["body"]) == (200, True, first.json()), bulk
    capture = await client.post(f"/v1/reservations/{rid}/settle", json={**body, "final": False})
    assert (capture.status_code, [f["field"] for f in capture.json()["fields"]]) == (422, ["gemini_usage"])
    refused = await client.post(f"/v1/reservations/{new}/settle", json=body)
    assert (refused.status_code, [f["field"] for f in refused.json()["fields"]]) == (422, ["gemini_usage"])
    assert (await client.get(f"/v1/reservations/{new}")).json()["status"] == "held"
    assert (await client.get(f"/v1/customers/{customer}/wallet")).json()["available"] == "9.00"


async def test_the_sdk_records_where_the_call_ran_as_the_canonical_usage_the_server_prices_by_it(
        client: AsyncTestClient, tag: str):
    """The canonical `usage` takes `inference_geo` (where an Anthropic call ran) beside
    `service_tier`, and a book's rules `match` it (README, Billing rules); `record()` let only
    `service_tier` through and refused `inference_geo="us"` as a count that is not a whole number
    (TypeError), so an SDK caller could not bill the price its provider charged for the region.
    Book: model-a input $10 per 1M, $11 per 1M matching inference_geo us; 1,000 input tokens in
    the US are 1,000 x 11 / 1M = $0.011."""
    book = {"id": f"geo-{tag}", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "in", "model": "model-a", "token_type": "input", "price": "10.00"},
                      {"id": "in-us", "model": "model-a", "token_type": "input", "price": "11.00",
                       "match": {"inference_geo": "us"}}]}
    assert (await client.post("/v1/price-books", json=book)).status_code == 201
    cid = f"geo-{tag}"
    made = await client.post("/v1/customers", json={"id": cid, "price_book": book["id"], "billing": "postpaid"})
    assert made.status_code == 201, made.text
    reservation = Reservation.__new__(Reservation)
    reservation.record(input_tokens=1000, inference_geo="us")
    assert reservation._usage == {"usage": {"input_tokens": 1000, "inference_geo": "us"}}
    rid = await _held(client, cid, f"geo-{tag}")
    settled = await client.post(f"/v1/reservations/{rid}/settle", json={**reservation._usage, "final": True})
    assert settled.status_code == 200, settled.text
    assert (settled.json()["charged"], [ln["rule_id"] for ln in settled.json()["lines"]]) == ("0.011", ["in-us"])
