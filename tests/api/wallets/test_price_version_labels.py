"""A price-book version label is read back through `GET /v1/price-books/{id}/versions/{label}`:
one that path cannot name (an empty, `.` or `..` segment, `?`, `#`, `%`, `\\` or a control
character) is refused when the version is posted, as a bad book id is; a stored one stays listed."""
from __future__ import annotations

import uuid
from urllib.parse import quote

from litestar.testing import AsyncTestClient

from pricing.parse import parse_version

UNREACHABLE = ["a/../b", "a/./b", "./a", "..", "a//b", "/a", "a/", "a?b", "a#b", "a%2Fb", "a%b", "a\\b",
               "a\x01b", "a\nb", "a\x7fb", "a\u2028b"]
REACHABLE = ["2026/11", "é/ü", "a b", "a;b", "a+b", ".a", "a..b", "v1.2_rc-3"]


def _path(book: str, label: str) -> str:
    return f"/v1/price-books/{book}/versions/" + "/".join(quote(s, safe="") for s in label.split("/"))


async def test_a_version_label_its_path_cannot_name_is_refused_at_create(client: AsyncTestClient):
    book = f"labels-{uuid.uuid4().hex[:8]}"
    bad_id = await client.post("/v1/price-books", json={
        "id": "a/b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": []})
    assert bad_id.status_code == 422, bad_id.text
    for i, label in enumerate(UNREACHABLE):
        made = await client.post("/v1/price-books", json={
            "id": book, "currency": "USD", "effective_from": f"2026-01-{i + 1:02d}T00:00:00Z",
            "version": label, "rules": []})
        assert made.status_code == 422, (label, made.text)
        problem = made.json()
        assert made.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == bad_id.json()["code"], (label, problem)
        assert "version" in made.text, (label, problem)
    assert (await client.get(f"/v1/price-books/{book}")).status_code == 404  # nothing written
    for i, label in enumerate(REACHABLE):
        made = await client.post("/v1/price-books", json={
            "id": book, "currency": "USD", "effective_from": f"2026-02-{i + 1:02d}T00:00:00Z",
            "version": label, "rules": []})
        assert made.status_code == 201, (label, made.text)
        got = await client.get(_path(book, label))
        assert (got.status_code, got.json()["version"]) == (200, label)


def test_a_stored_version_with_such_a_label_is_still_read_back():
    stored = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": []},
                           version="a/../b", limits=False)
    assert stored.version == "a/../b"
