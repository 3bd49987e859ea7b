"""`tokentill audit export --format csv` counts the postings it wrote, not the line breaks: a
request id is the caller's text and may hold one, which COPY writes inside quotes."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

from litestar.testing import AsyncTestClient

from api.app import create_app
from api.settings import Settings
from ledger.export import csv_rows_ended
from wallets.core.commands import Reserve

ADMIN = {"Authorization": "Bearer export-csv-count"}


def _export_csv(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "export", "--format", "csv"],
        env={**os.environ, "TOKENTILL_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_a_request_id_with_a_line_break_is_one_posting_a_row_in_the_count(scratch_url) -> None:
    """A $5.00 top-up (2 postings: cash, the lot) and a hold of $0.00015 under the request id
    "first line\\nsecond line" (2 postings: the lot, reserved), taken before the API refused such an
    id: 4 postings, 4 rows. The hold's two
    rows each hold a line break, so counting line breaks said `exported 6 postings`."""
    app = create_app(Settings(admin_key="export-csv-count", scheduler=False), scratch_url)
    async with AsyncTestClient(app=app) as client:
        book = {
            "id": "rows",
            "currency": "USD",
            "effective_from": "2026-01-01T00:00:00Z",
            "rules": [{"id": "m-in", "model": "m", "token_type": "input", "price": "1.00"}],
        }
        assert (await client.post("/v1/price-books", headers=ADMIN, json=book)).status_code == 201
        made = await client.post(
            "/v1/customers", headers=ADMIN, json={"id": "rows", "currency": "USD", "price_book": "rows"}
        )
        assert made.status_code == 201, made.text
        topped = await client.post(
            "/v1/customers/rows/topups", headers=ADMIN, json={"amount": "5.00", "reference": "p"}
        )
        assert topped.status_code == 201, topped.text
        # the API refuses a line break in a request id now (pricing.text's rule); one taken before
        # the rule is still in the ledger, so the hold goes through the wallet service, as it was
        held = await app.state.services.wallets.submit(Reserve(
            customer_id="rows", request_id="first line\nsecond line", request_hash=b"rows", model="m",
            ttl_seconds=300, amount=150_000))  # $0.00015 in atomic units (10**-9)
        assert held.reservation.status == "held"
    done = _export_csv(scratch_url)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert [r["request_id"] for r in rows] == ["", "", "first line\nsecond line", "first line\nsecond line"]
    assert done.stderr.startswith("exported 4 postings as csv"), done.stderr


def test_rows_are_counted_across_chunks_that_split_a_quoted_value() -> None:
    """Three rows written in four chunks: a quoted value holding two line breaks and two escaped
    quotes (""), one of them split between two chunks, and a chunk ending inside the quotes. By
    hand: rows end in chunks 1 (`1,a`), 3 (the quoted row) and 4 (`3,"",b`): 1, 0, 1, 1."""
    chunks = [b'1,a\n2,"x\ny"', b'"z""', b'\nw",q\n', b'3,"",b\n']
    quoted, ends = False, []
    for chunk in chunks:
        ended, quoted = csv_rows_ended(chunk, quoted)
        ends.append(ended)
    assert ends == [1, 0, 1, 1] and not quoted
    assert list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline=""))) == [
        ["1", "a"],
        ["2", 'x\ny"z"\nw', "q"],
        ["3", "", "b"],
    ]
