"""`tokentill keys create` prints the key as POST /v1/api-keys answers it: the same fields."""

from __future__ import annotations

import json

from api.cli import main
from api.routes.keys import CreatedApiKeyResponse


def test_keys_create_prints_every_field_the_api_answers_with_its_name(database_url, monkeypatch, capsys):
    """README: `tokentill keys create --scope inference --customer acme --name "chat backend"`.
    It printed {"id", "key", "scope", "customers", "created_at"}: the name just given, which
    `keys list` shows and POST /v1/api-keys answers, was not in it, nor `revoked_at`."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    assert main(["keys", "create", "--scope", "inference", "--customer", "acme", "--name", "chat backend"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == set(CreatedApiKeyResponse.__struct_fields__)
    assert (printed["scope"], printed["customers"], printed["name"], printed["revoked_at"]) == (
        "inference",
        ["acme"],
        "chat backend",
        None,
    )
    assert printed["key"].startswith("tt_") and printed["id"].startswith("key_")


def test_keys_create_writes_created_at_as_the_api_does_in_utc_with_z(database_url, monkeypatch, capsys):
    """(review of d1fcc86) POST /v1/api-keys answers created_at in UTC with Z, as every answer
    does; the CLI printed the same key's created_at with isoformat(): '...+00:00'."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    assert main(["keys", "create", "--scope", "inference", "--name", "created-at z"]) == 0
    created_at = json.loads(capsys.readouterr().out)["created_at"]
    assert created_at.endswith("Z") and "+" not in created_at, created_at


def test_keys_create_keeps_a_customer_given_twice_once_as_the_api_does(database_url, monkeypatch, capsys):
    """`keys create --customer a --customer a` stored ["a", "a"] and `keys list` showed `a,a`."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    assert main(["keys", "create", "--scope", "inference", "--customer", "dup-a", "--customer", "dup-b",
                 "--customer", "dup-a", "--name", "customer twice"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["customers"] == ["dup-a", "dup-b"]
    assert main(["keys", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(made["id"]))
    assert line.split()[2] == "dup-a,dup-b", line


def test_keys_list_writes_revoked_at_as_the_api_does_in_utc_with_z(database_url, monkeypatch, capsys):
    """`keys list` printed a revoked key's time with isoformat(), 'revoked 2026-...+00:00', where
    `keys create`, DELETE /v1/api-keys/{id} and every answer write UTC with Z."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    assert main(["keys", "create", "--scope", "auditor", "--name", "revoked z"]) == 0
    key_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["keys", "revoke", key_id]) == 0
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(key_id))
    revoked = line.split()[4]
    assert line.split()[3] == "revoked" and revoked.endswith("Z") and "+" not in revoked, line
