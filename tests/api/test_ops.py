"""Operations and audit endpoints through the app, with problem+json errors."""
from __future__ import annotations

import pytest

from tests.api.apps import api_client

ADMIN = {"Authorization": "Bearer test-admin"}


@pytest.fixture
async def client(db, database_url):  # db: the migrated database, with USD
    async with api_client(database_url) as client:
        yield client


async def test_health_and_readiness_report_a_migrated_database(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_metrics_are_prometheus_text(client):
    await client.get("/healthz")
    await client.get("/v1/customers/someone-123/wallet")  # 401: no key
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in response.text.splitlines() if line and not line.startswith("#")}
    assert series['tokentill_requests_total{app_name="tokentill",method="GET",path="/healthz",'
                  'status_code="200"}'] >= 1
    routed = [name for name in series if name.startswith("tokentill_requests_total{")
              and 'status_code="401"' in name and "/wallet" in name]
    assert routed and all("someone-123" not in name for name in routed)  # by route, not by raw path
    assert any(name.startswith("tokentill_request_duration_seconds_bucket{") for name in series)
    assert not any('path="/metrics"' in name for name in series)
    assert "tokentill_transaction_retries" in response.text


async def test_the_gateways_paths_are_counted_by_mount_not_one_series_each(client):
    """Anyone (no key) may call any path under the gateway's mounts: were each its own series
    (three tables, a histogram's buckets among them), the process's memory and /metrics would grow
    with every new path, forever."""
    for i in range(3):
        assert (await client.get(f"/openai/v1/models/probe-{i}")).status_code == 401
        assert (await client.post(f"/anthropic/v1/anything-{i}")).status_code == 404
    text = (await client.get("/metrics")).text
    assert "probe-" not in text and "anything-" not in text
    series = [line for line in text.splitlines() if line.startswith("tokentill_requests_total{")]
    assert any('path="/openai/v1/{path}"' in line and 'status_code="401"' in line for line in series), series
    assert any('path="/anthropic/{path}"' in line and 'status_code="404"' in line for line in series), series


async def test_audit_endpoints_need_a_key(client):
    response = await client.get("/v1/audit/trial-balance")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthorized"
    wrong = await client.post("/v1/audit/verify", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_trial_balance_totals_are_equal_and_verify_passes(client):
    tb = await client.get("/v1/audit/trial-balance?currency=USD", headers=ADMIN)
    assert tb.status_code == 200
    body = tb.json()
    assert body["total_debits"] == body["total_credits"] and body["balanced"] is True
    verify = (await client.post("/v1/audit/verify", headers=ADMIN)).json()
    assert verify["ok"] is True
    assert {c["name"] for c in verify["checks"]} >= {"entries_balanced", "cached_balances", "seals", "bounds"}


async def test_an_unknown_route_is_a_problem_document(client):
    response = await client.get("/v1/nothing-here", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_readiness_does_not_read_the_migration_scripts_again_on_every_probe(client, monkeypatch):
    """Each /readyz loaded every migration script (alembic's ScriptDirectory) to learn the head:
    about 11 ms of the event loop per probe, every request of the process waiting behind it."""
    from alembic.script import ScriptDirectory

    loads = []
    load = ScriptDirectory.from_config.__func__

    def counted(cls, config):
        loads.append(config)
        return load(cls, config)

    await client.get("/readyz")  # the first may load them
    monkeypatch.setattr(ScriptDirectory, "from_config", classmethod(counted))
    for _ in range(3):
        assert (await client.get("/readyz")).status_code == 200
    assert loads == []


async def test_metrics_content_type_has_one_charset_so_prometheus_3_can_parse_it(client):
    """It read `text/plain; version=1.0.0; charset=utf-8; charset=utf-8` (Litestar added a charset
    to prometheus_client's, which has one): a duplicate parameter, which Go's mime parser refuses,
    and Prometheus 3 fails a scrape whose Content-Type it cannot parse."""
    from email.message import Message

    from prometheus_client import CONTENT_TYPE_LATEST

    response = await client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    header = Message()
    header["content-type"] = response.headers["content-type"]
    assert [name for name, _ in header.get_params()].count("charset") == 1


async def test_a_trial_balance_without_a_currency_is_of_one_the_ledger_holds_and_names_the_others(scratch_url):
    """A ledger in EUR and GBP only: the trial balance asked without a currency was an empty USD one,
    `balanced` true; it is of EUR (the first there is), and lists every currency it could be asked for."""
    async with api_client(scratch_url) as client:
        for currency in ("GBP", "EUR"):
            book = {"id": f"b-{currency}", "currency": currency, "effective_from": "2026-01-01T00:00:00Z",
                    "rules": [{"id": "call", "token_type": "request", "price": "0.01"}]}
            assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
            cid = f"c-{currency.lower()}"
            assert (await client.post("/v1/customers", headers=ADMIN, json={
                "id": cid, "currency": currency, "price_book": f"b-{currency}"})).status_code == 201
            assert (await client.post(f"/v1/customers/{cid}/topups", headers=ADMIN,
                                      json={"amount": "7.00"})).status_code == 201
        body = (await client.get("/v1/audit/trial-balance", headers=ADMIN)).json()
        assert body["currency"] == "EUR" and body["currencies"] == ["EUR", "GBP"]
        held = {a["account"]: a["balance"] for a in body["accounts"] if a["balance"] != "0.00"}
        assert held.pop("asset:platform:cash:EUR") == "7.00"
        [(lot, balance)] = held.items()
        assert lot.startswith("liability:customer:c-eur:lot:") and balance == "-7.00"
        gbp = (await client.get("/v1/audit/trial-balance?currency=GBP", headers=ADMIN)).json()
        assert gbp["currency"] == "GBP" and gbp["currencies"] == ["EUR", "GBP"]
        assert sorted(a["balance"] for a in gbp["accounts"] if a["balance"] != "0.00") == ["-7.00", "7.00"]


async def test_a_trial_balance_that_holds_no_currency_says_so_with_an_empty_currencies_list(scratch_url):
    """README: `currencies` lists each currency the trial balance may be asked in. Where there is
    none (a ledger with no entry yet; a ledger at a T before its first entry) the field was left out
    (msgspec omitted the empty default), so a client reading `currencies` failed with a KeyError
    where the list is empty. It is there, `[]`; after a EUR top-up, `["EUR"]` now and `[]` before."""
    async with api_client(scratch_url) as client:
        empty = (await client.get("/v1/audit/trial-balance", headers=ADMIN)).json()
        assert empty["currencies"] == [] and empty["accounts"] == [] and empty["balanced"] is True
        book = {"id": "b-eur", "currency": "EUR", "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "call", "token_type": "request", "price": "0.01"}]}
        assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
        assert (await client.post("/v1/customers", headers=ADMIN, json={
            "id": "c-eur", "currency": "EUR", "price_book": "b-eur"})).status_code == 201
        assert (await client.post("/v1/customers/c-eur/topups", headers=ADMIN,
                                  json={"amount": "7.00"})).status_code == 201
        now = (await client.get("/v1/audit/trial-balance", headers=ADMIN)).json()
        assert now["currency"] == "EUR" and now["currencies"] == ["EUR"]
        before = (await client.get("/v1/audit/trial-balance?at=2000-01-01T00:00:00Z", headers=ADMIN)).json()
        assert before["at"] == "2000-01-01T00:00:00Z" and before["currencies"] == [], before


def _readme_metrics() -> dict[str, str]:
    """The README's table of metrics: each exposed name with its row."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return {line.split("`")[1]: line for line in readme.splitlines() if line.startswith("| `tokentill_")}


async def test_every_metric_served_is_a_row_of_the_readmes_table_with_its_type_and_help(client):
    """An operator's alerts and dashboards name these series: each one /metrics serves is documented,
    with its type, labels and help text as served, and every documented one is served (a renamed
    metric fails here, not on someone's dashboard). Half of them were named nowhere."""
    import api.server  # noqa: F401  # its connection metrics, registered in every `tokentill serve`

    await client.get("/healthz")  # a request's series have samples, their labels to check
    text = (await client.get("/metrics")).text
    served: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP tokentill_") and not line.split()[2].endswith("_created"):
            name, help_text = line.split(" ", 3)[2:]
            served[name] = (help_text, "")
        elif line.startswith("# TYPE tokentill_") and line.split()[2] in served:
            name, kind = line.split()[2:]
            served[name] = (served[name][0], kind)
    rows = _readme_metrics()
    assert served and sorted(served) == sorted(rows), (sorted(set(served) - set(rows)), sorted(set(rows) - set(served)))
    for name, (help_text, kind) in served.items():
        cells = [cell.strip() for cell in rows[name].strip("|").split("|")]
        assert cells[1] == kind and cells[-1] == help_text, (name, kind, help_text, rows[name])
        documented = set() if cells[2] == "—" else set(cells[2].split(", "))
        base = name.removesuffix("_total")
        for line in text.splitlines():  # the labels of each of its samples (one with none yet has none)
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            if sample in (name, f"{base}_bucket", f"{base}_sum", f"{base}_count") and "{" in line:
                labels = {pair.split("=", 1)[0] for pair in line.split("{", 1)[1].rsplit("}", 1)[0].split('",')}
                assert labels - {"app_name", "le"} == documented, (name, labels, rows[name])


async def test_readiness_with_every_pooled_connection_in_use_still_asks_the_database(db, database_url):
    """A pool busy to its last connection (pool and overflow, all serving requests) is load, not a
    database down: /readyz said 503 'database unreachable: TimeoutError' after 2 s, so under a
    burst every instance behind a load balancer left it at once. It asks the database over a
    connection of its own instead, and answers 200 within the probe's 2 s."""
    import time

    from litestar.testing import AsyncTestClient

    from migrations import runner
    from tests.api.apps import api_app

    app = api_app(database_url, webhooks=False, pool_size=1)
    async with AsyncTestClient(app=app) as client:
        engine = app.state.services.db.engine
        held = [await engine.connect() for _ in range(2)]  # the pool's 1 and its overflow's 1
        try:
            started = time.monotonic()
            ready = await client.get("/readyz")
            took = time.monotonic() - started
        finally:
            for conn in held:
                await conn.close()
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "migration": runner.head_revision()}
    assert took < 2.0, took


async def test_readiness_of_a_server_older_than_its_database_is_503_naming_both_revisions(scratch_url):
    """The README's rolling deploy: the first new server migrated the database past this one's
    head; this one answers 503 not_ready, saying where the database is and where the code is."""
    import psycopg

    from migrations import runner

    async with api_client(scratch_url) as client:
        ready = await _probe(client)
        assert ready.status_code == 200, ready.text
        with psycopg.connect(scratch_url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999'")
        ready = await _probe(client)
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert ready.json()["detail"] == f"migrations at 9999, head is {runner.head_revision()}"


async def _probe(client, tries: int = 5):
    """/readyz, asked again while it says only that the database did not answer within the probe's
    READY_TIMEOUT_S: a busy CI machine (2 cores, a new database's first session) can take longer,
    and the probe then rightly says not ready; these tests are about what it says once it is asked."""
    for _ in range(tries):
        ready = await client.get("/readyz")
        if not ready.json().get("detail", "").startswith("database unreachable: TimeoutError"):
            break
    return ready


async def test_readiness_of_a_database_that_takes_no_writes_is_503_until_it_does(server_url, scratch_url):
    """A failover's standby reached before its name moved on (or default_transaction_read_only):
    every write answers 503, but /readyz answered 200 'ready', so the load balancer kept sending
    this instance the writes it could not make. It says not ready, then ready once the database
    takes writes again (on a fresh session: the read-only one is not kept)."""
    import psycopg
    from psycopg import sql

    database = psycopg.conninfo.conninfo_to_dict(scratch_url)["dbname"]

    def read_only(on: bool) -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                sql.Identifier(database), sql.SQL("on" if on else "off")))

    read_only(True)
    try:
        async with api_client(scratch_url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["detail"].startswith("the database takes no writes"), ready.text
            read_only(False)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        read_only(False)
