"""The console's browser tests: a real `tokentill serve` subprocess on a database of its own,
seeded through the HTTP API, driven by Playwright in Debian's Chromium (/usr/bin/chromium;
`.ci/run` installs it with apt; nothing is downloaded). Screenshots go to
tests/e2e/artifacts/ (gitignored), one per page visited."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from api.bench.common import free_port
from tests.conftest import _migrated

CHROMIUM = os.environ.get("TOKENTILL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN = "e2e-admin-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Console:
    url: str
    keys: dict[str, str]  # "admin", "acme", "globex", "auditor" -> secret
    api: httpx.Client  # the admin's client of the same server
    database_url: str = ""  # the server's database, for what the API cannot do

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30)


def _serve(database_url: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": database_url, "TOKENTILL_ADMIN_KEY": ADMIN,
           "TOKENTILL_SCHEDULER": "off", "TOKENTILL_LOG_LEVEL": "WARNING"}
    with log.open("w") as out:  # a file, not a pipe nobody reads (a full pipe would stall the server)
        return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


def _ok(response: httpx.Response) -> dict:
    assert response.status_code < 300, response.text
    return response.json()


def seed(api: httpx.Client) -> dict[str, str]:
    """Two customers with credit and usage on several days of this month, and a key each, an
    auditor's key; returns the secrets."""
    rules = [{"id": f"{m}-{t}", "model": f"model-{m}", "token_type": t, "price": price}
             for m, t, price in (("a", "input", "10.00"), ("a", "output", "30.00"),
                                 ("b", "input", "2.00"), ("b", "output", "6.00"))]
    _ok(api.post("/v1/price-books", json={"id": "e2e", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                          "rules": rules}))
    keys = {"admin": ADMIN}
    now = datetime.now(UTC)
    for customer in ("acme", "globex"):
        _ok(api.post("/v1/customers", json={"id": customer, "name": customer.title() + " Inc.", "price_book": "e2e"}))
        _ok(api.post(f"/v1/customers/{customer}/topups", json={"amount": "100.00", "reference": f"pay-{customer}"}))
        _ok(api.post(f"/v1/customers/{customer}/grants", json={
            "amount": "5.00", "priority": 10, "reason": "welcome credit",
            "expires_at": (now + timedelta(days=40)).strftime("%Y-%m-%dT00:00:00Z")}))
        keys[customer] = _ok(api.post("/v1/api-keys", json={"scope": f"customer:{customer}"}))["key"]
    # Three days of this month at 09:00, or earlier today before 09:00: never in the future.
    days = sorted({max(now.replace(day=1), now - timedelta(days=n)).replace(hour=min(9, now.hour)) for n in (0, 2, 5)})
    events = [{"event_id": f"evt-{n}-{model}", "customer_id": "acme", "model": model,
               "timestamp": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "usage": {"input_tokens": 1000 * (n + 1), "output_tokens": 250 * (n + 1)}}
              for n, day in enumerate(days) for model in ("model-a", "model-b")]
    events += [{"event_id": f"bulk-{n}", "customer_id": "globex", "model": "model-b",  # a second journal page
                "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "usage": {"input_tokens": 100 + n}}
               for n in range(60)]
    assert _ok(api.post("/v1/usage-events", json=events))["accepted"] == len(events)
    held = _ok(api.post("/v1/reservations", json={"customer_id": "acme", "request_id": "req-open", "model": "model-a",
                                                  "estimate": {"input_tokens": 2000, "max_output_tokens": 500}}))
    assert held["status"] == "held"
    settled = _ok(api.post("/v1/reservations", json={"customer_id": "acme", "request_id": "req-traced",
                                                     "model": "model-a",
                                                     "estimate": {"input_tokens": 1200, "max_output_tokens": 400}}))
    _ok(api.post(f"/v1/reservations/{settled['id']}/settle",
                 json={"usage": {"input_tokens": 1100, "output_tokens": 300}}))
    _ok(api.post("/v1/budgets", json={"customer_id": "acme", "name": "monthly cap", "window": "month",
                                      "metric": "money", "limit": "50.00", "thresholds": [80]}))
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=2, minute=0, second=0, microsecond=0)
    closed = _ok(api.post("/v1/billing/close", json={"until": next_month.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                     "customer_id": "acme", "early": True}))  # this month's, final
    assert closed, "acme's period closed"
    keys["auditor"] = _ok(api.post("/v1/api-keys", json={"scope": "auditor"}))["key"]
    return keys


@pytest.fixture(scope="module")
def console(server_url: str, request) -> Iterator[Console]:
    """`tokentill serve` on a database of its own (verify sees only what these tests wrote). Its
    log is kept beside the screenshots; the module fails if the server logged an unhandled error."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"{request.module.__name__.rsplit('.', 1)[-1]}.server.log"
    for url in _migrated(server_url, f"tokentill_e2e_{uuid.uuid4().hex[:8]}"):
        port = free_port()
        proc = _serve(url, port, log)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as api:
                yield Console(base, seed(api), api, url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert "unhandled error" not in log.read_text(), log.read_text()[-5000:]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright; no browser is downloaded. Per module: Playwright's
    sync API holds an event loop while it runs, and the async tests that follow need theirs."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it (apt-get install -y chromium, as .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, console):
    """A fresh browser context (no cookies) per test, with JavaScript errors collected."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
    yield page
    context.close()
