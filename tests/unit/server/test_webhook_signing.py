"""What a receiver gets, without a database: the Standard Webhooks payload shape and headers,
one signature per live secret, each verifiable on its own with the `standardwebhooks` package."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from api.webhooks import body_of, signed_headers
from wallets.webhooks.deliveries import Claimed
from wallets.webhooks.rules import new_secret

AT = datetime(2026, 12, 2, 12, 0, 5, tzinfo=UTC)


def _claimed(*secrets: str) -> Claimed:
    payload = {"id": "evt_1", "type": "balance.low", "customer_id": "acme", "available": "4.00"}
    return Claimed(7, "we_0123456789abcdef", "evt_1", "balance.low", payload, AT, 1, AT, AT,
                   "https://hooks.example.com/x", secrets)


def test_the_body_is_type_timestamp_and_the_event_as_data():
    assert json.loads(body_of(_claimed(new_secret()))) == {
        "type": "balance.low", "timestamp": "2026-12-02T12:00:05Z",
        "data": {"id": "evt_1", "type": "balance.low", "customer_id": "acme", "available": "4.00"}}


def test_each_live_secret_signs_and_each_signature_verifies_alone(monkeypatch):
    current, previous, stranger = new_secret(), new_secret(), new_secret()
    claimed = _claimed(current, previous)
    body = body_of(claimed)
    headers = signed_headers(claimed, body, AT)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == str(int(AT.timestamp()))
    assert [s.split(",")[0] for s in headers["webhook-signature"].split(" ")] == ["v1", "v1"]
    monkeypatch.setattr("standardwebhooks.webhooks.datetime", _Frozen)  # the receiver's clock at AT
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers)["data"]["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body.replace(b"4.00", b"9.00"), headers)


class _Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return AT


def test_a_non_ascii_event_is_sent_as_utf8_and_its_signature_covers_those_bytes(monkeypatch):
    """A budget named in French and Japanese: the body is UTF-8 as is (no \\u escapes to undo), and
    the signature is the HMAC of `id.timestamp.` and those bytes, as a receiver in any language
    computes it over the raw body, and as `standardwebhooks` verifies it."""
    secret = new_secret()
    payload = {"id": "evt_2", "type": "budget.exceeded", "customer_id": "acme", "budget_name": "Équipe 東京 🚀"}
    claimed = Claimed(8, "we_0123456789abcdef", "evt_2", "budget.exceeded", payload, AT, 1, AT, AT,
                      "https://hooks.example.com/x", (secret,))
    body = body_of(claimed)
    assert "Équipe 東京 🚀".encode() in body
    headers = signed_headers(claimed, body, AT)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, b"evt_2." + headers["webhook-timestamp"].encode() + b"." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    monkeypatch.setattr("standardwebhooks.webhooks.datetime", _Frozen)
    assert Webhook(secret).verify(body, headers)["data"]["budget_name"] == "Équipe 東京 🚀"
