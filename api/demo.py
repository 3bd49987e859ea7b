"""`tokentill demo`: the chatbot scenario, end to end, on a fresh embedded database, over HTTP.

It starts a throwaway PostgreSQL and a real server, then drives it with the client SDK exactly
as an inference service would. The figures it prints are worked by hand in the README.
"""
from __future__ import annotations

import secrets
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import uvicorn

from api.app import create_app
from api.bench.common import free_port
from api.client import Client, InsufficientFunds
from api.runtime import sync_url
from api.settings import Settings
from ledger import embedded
from migrations import runner
from pricing.tokens import TokenCounter

PRICE_BOOK = {
    "id": "standard", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
    "rules": [
        {"id": "call", "token_type": "request", "price": "0.01"},
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "b-in", "model": "model-b", "token_type": "input", "price": "5.00"},
        {"id": "b-out", "model": "model-b", "token_type": "output", "price": "10.00"},
    ],
}
STREAM_WORDS = " the quick brown fox jumps over a lazy dog"


class _Server(threading.Thread):
    def __init__(self, app, port: int) -> None:
        super().__init__(daemon=True)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(timeout=10)


def streamed_text(tokens: int) -> str:
    """Deterministic model output of exactly `tokens` cl100k tokens (each word is one token)."""
    words = STREAM_WORDS.split(" ")[1:]
    text = "".join(f" {words[i % len(words)]}" for i in range(tokens))
    assert TokenCounter().count_text(text, "model-a").raw_tokens == tokens
    return text


def _step(message: str) -> None:
    print(f"  - {message}", flush=True)


def scenario(tt: Client) -> None:
    _step("price book 'standard': $0.01/request; model-a $10/M in, $20/M out; model-b $5/M in, $10/M out")
    tt.post("/v1/price-books", PRICE_BOOK)
    tt.post("/v1/customers", {"id": "acme", "name": "Acme", "currency": "USD", "price_book": "standard"})
    tt.post("/v1/customers/acme/topups", {"amount": "20.00", "reference": "demo-payment-1"})
    _step("customer acme topped up with $20.00")

    with tt.reserve("acme", "model-a", request_id="chat-1", input_tokens=1000, max_output_tokens=500) as r:
        _step(f"chat-1 (model-a) held ${r.data['amount']}")
        r.record(input_tokens=1000, output_tokens=400)
    _step(f"chat-1 settled: charged ${r.settlement['charged']}, released ${r.settlement['released']}")

    with tt.reserve("acme", "model-b", request_id="chat-2", input_tokens=2000, max_output_tokens=100) as r:
        r.record(input_tokens=2000, output_tokens=10)
    _step(f"chat-2 (model-b) settled: charged ${r.settlement['charged']}")

    text = streamed_text(200)
    try:
        with tt.reserve("acme", "model-a", request_id="chat-3", input_tokens=500, max_output_tokens=1000) as r:
            meter = r.stream_meter()
            for word in text.split(" ")[1:]:
                meter.add(" " + word)
            raise KeyboardInterrupt("the user pressed stop")
    except KeyboardInterrupt:
        pass
    _step(f"chat-3 (model-a) stream cancelled after {meter.output_tokens} tokens: "
          f"charged ${r.settlement['charged']}")

    try:
        with tt.reserve("acme", "model-b", request_id="chat-4", input_tokens=300, max_output_tokens=100) as r:
            raise ConnectionError("the provider failed before the first token")
    except ConnectionError:
        pass
    _step(f"chat-4 (model-b) failed before any token: released ${r.settlement['released']}")

    try:
        with tt.reserve("acme", "model-a", request_id="chat-5", input_tokens=1, max_output_tokens=2_000_000):
            pass
    except InsufficientFunds as refused:
        _step(f"chat-5 asked for a hold larger than the wallet: refused, {refused.code}")


def report(tt: Client) -> None:
    wallet = tt.get("/v1/customers/acme/wallet")
    print(f"\nwallet acme: available ${wallet['available']}  reserved ${wallet['reserved']}  "
          f"receivable ${wallet['receivable']}")
    usage = tt.get("/v1/customers/acme/usage?group_by=model,token_type")
    print(f"\n{'model':<10}{'token type':<12}{'quantity':>10}{'amount':>12}")
    total = Decimal(0)
    for row in usage["rows"]:
        print(f"{row['model']:<10}{row['token_type']:<12}{row['quantity']:>10}{'$' + row['amount']:>12}")
        total += Decimal(row["amount"])  # exact: the wire carries decimal strings
    print(f"{'':<22}{'total':>10}{'$' + str(total):>12}")


def main(_args=None, _settings: Settings | None = None) -> int:
    started = time.monotonic()
    admin = secrets.token_urlsafe(16)
    print("tokentill demo: a chatbot billed per token, on a fresh embedded PostgreSQL", flush=True)
    with tempfile.TemporaryDirectory(prefix="tokentill-demo-") as tmp:
        cluster = embedded.start(Path(tmp) / "pg", keep=False)
        server = None
        try:
            runner.upgrade(sync_url(cluster.url))
            _step(f"database ready in {time.monotonic() - started:.1f}s")
            port = free_port()
            server = _Server(create_app(Settings(admin_key=admin, scheduler=False), cluster.url), port)
            server.start()
            with Client(f"http://127.0.0.1:{port}", admin) as tt:
                _wait_ready(tt)
                scenario(tt)
                report(tt)
        finally:
            if server is not None:
                server.stop()
            cluster.stop()
    print(f"\ndone in {time.monotonic() - started:.1f}s")
    return 0


def _wait_ready(tt: Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            tt.get("/readyz")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
