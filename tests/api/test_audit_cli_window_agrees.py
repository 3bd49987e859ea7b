"""`tokentill audit export`/`reconcile --from T --to T` and `GET /v1/journal?from=T&to=T` read one
window alike. The journal answers an empty range (`from` equal to `to`, or two bounds read as one
microsecond though `to` is after `from` to the 9th digit) with 200 and no entry, and a `to` before
`from` (to the 9th digit) with a 422 naming `to`, 'must not be before from'. The CLI refused the
first two (`error: --from must be before --to`, exit 2), and named `--from` for the last."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

DAY = "2001-02-03T04:05:"


def _cli(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize(("start", "end"), [
    ("06Z", "06Z"),  # one instant: [T, T) holds nothing
    ("06.7890121Z", "06.7890129Z"),  # both read as .789013: after it to the 9th digit, an empty range
])
async def test_an_empty_window_is_an_empty_answer_from_the_api_and_the_cli(client, database_url, tmp_path,
                                                                          start, end):
    bounds = {"from": f"{DAY}{start}", "to": f"{DAY}{end}"}
    response = await client.get("/v1/journal", params=bounds)
    assert response.status_code == 200 and response.json()["entries"] == [], response.text
    for fmt in ("jsonl", "csv", "beancount"):
        out = tmp_path / f"empty.{fmt}"
        export = _cli(database_url, tmp_path, "export", "--format", fmt, "--out", str(out),
                      "--from", bounds["from"], "--to", bounds["to"])
        assert export.returncode == 0, export.stderr
        assert out.exists()
    assert "exported 0 entries" in export.stderr, export.stderr
    verify = _cli(database_url, tmp_path, "verify", "--file", str(tmp_path / "empty.jsonl"))
    assert verify.returncode == 0, verify.stdout
    payments = tmp_path / "payments.csv"
    payments.write_text("reference,amount,currency\n")
    reconcile = _cli(database_url, tmp_path, "reconcile", "--payments", str(payments),
                     "--from", bounds["from"], "--to", bounds["to"])
    assert reconcile.returncode == 0 and "reconciled" in reconcile.stdout, reconcile.stdout + reconcile.stderr


@pytest.mark.parametrize(("start", "end"), [
    ("07Z", "06Z"),
    ("06.7890129Z", "06.7890121Z"),  # both read as .789013, but .7890121 is before .7890129
])
async def test_a_to_before_from_is_refused_naming_to_by_the_api_and_the_cli(client, database_url, tmp_path,
                                                                           start, end):
    bounds = {"from": f"{DAY}{start}", "to": f"{DAY}{end}"}
    response = await client.get("/v1/journal", params=bounds)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"] == [{"field": "to", "message": "must not be before from"}]
    payments = tmp_path / "payments.csv"
    payments.write_text("reference,amount,currency\n")
    for args in (("export", "--format", "jsonl", "--out", str(tmp_path / "none.jsonl")),
                 ("reconcile", "--payments", str(payments))):
        refused = _cli(database_url, tmp_path, *args, "--from", bounds["from"], "--to", bounds["to"])
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr == "error: --to must not be before --from\n", refused.stderr
    assert not (tmp_path / "none.jsonl").exists()
