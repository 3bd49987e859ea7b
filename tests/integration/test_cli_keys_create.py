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
