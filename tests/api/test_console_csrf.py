"""A console form posted from another origin is refused, even one that carries a valid CSRF token.

The console's CSRF token was a double-submit one (a signed cookie and the same value in the form),
not tied to the session: anyone who opens the sign-in page gets a valid pair. A page on a
sibling host (`evil.example.com` beside `console.example.com`: the same site, so the
`SameSite=Strict` session cookie goes along) can write such a cookie for the whole domain and post
the form with its value. Browsers say where a request comes from in `Sec-Fetch-Site`."""
from __future__ import annotations

import re
import uuid

import pytest

from api.demo import PRICE_BOOK
from tests.api.apps import api_client, sign_in

ADMIN_KEY = "console-csrf-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
async def console(database_url):
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"csrf-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        customer = f"csrf-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/customers", headers=ADMIN,
                                  json={"id": customer, "price_book": book})).status_code == 201
        yield client, await sign_in(client, ADMIN_KEY), customer


async def _top_up(client, token: str, customer: str, headers: dict[str, str]):
    form = await client.get(f"/console/customers/{customer}/top-up")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)
    return await client.post(f"/console/customers/{customer}/top-up", follow_redirects=False, headers=headers,
                             data={"_csrf_token": token, "idempotency_key": key, "amount": "7.00", "priority": "100"})


async def _lots(client, customer: str) -> list[dict]:
    return (await client.get(f"/v1/customers/{customer}/wallet", headers=ADMIN)).json()["grants"]


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
async def test_a_top_up_posted_from_another_origin_with_a_valid_token_is_refused(console, site):
    """It was recorded: the token and the session cookie were all the console checked."""
    client, token, customer = console
    before = await _lots(client, customer)
    refused = await _top_up(client, token, customer, {"Sec-Fetch-Site": site, "Origin": "https://evil.console.test"})
    assert refused.status_code == 403, refused.headers.get("location")
    assert "from another site" in refused.text and "forbidden" in refused.text  # the 403 page, the API's code
    assert await _lots(client, customer) == before


async def test_a_sign_in_posted_from_another_origin_is_refused(console):
    """A sign-in from another origin (signing the victim in with the attacker's key, whose
    pages then show the attacker's data as the victim's) is refused too."""
    client, token, _ = console
    refused = await client.post("/console/sign-in", follow_redirects=False, headers={"Sec-Fetch-Site": "same-site"},
                                data={"_csrf_token": token, "key": ADMIN_KEY})
    assert refused.status_code == 403 and "from another site" in refused.text


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin", "Origin": "https://console.test"},
                                     {"Sec-Fetch-Site": "none"}, {}])
async def test_a_top_up_from_the_console_itself_goes_through(console, headers):
    """The console's own form (same-origin), one the user typed the address of (none), and a
    client that sends no Sec-Fetch-Site (an older browser: the token and SameSite still apply)."""
    client, token, customer = console
    before = len(await _lots(client, customer))
    done = await _top_up(client, token, customer, headers)
    assert done.status_code == 303, done.text[:300]
    assert len(await _lots(client, customer)) == before + 1


async def test_a_page_read_from_another_origin_is_not_refused(console):
    """A link followed from elsewhere (a GET) opens the page as ever: only posts change anything."""
    client, _, customer = console
    page = await client.get(f"/console/customers/{customer}", headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200


async def test_a_top_up_with_a_tossed_csrf_cookie_is_refused_without_sec_fetch_site(console):
    """A browser that sends no Sec-Fetch-Site, a page on a sibling host: it writes the attacker's
    own token pair (the cookie and the form's field, both from opening the sign-in page) into the
    victim's browser and posts the form. The pair matched, and the top-up was recorded (303); the
    token is now bound to the session it was given in, so the attacker's cannot match the victim's."""
    client, _, customer = console
    victims = list(client.cookies.jar)
    client.cookies.jar.clear()
    attacker_page = await client.get("/console/sign-in")  # the attacker's own visit: a fresh token
    tossed_token = re.search(r'name="_csrf_token" value="([^"]+)"', attacker_page.text).group(1)
    tossed = [c for c in client.cookies.jar if c.name != "tokentill_console"]  # all but the session's
    client.cookies.jar.clear()
    for cookie in [c for c in victims if c.name not in {t.name for t in tossed}] + tossed:
        client.cookies.jar.set_cookie(cookie)
    try:
        before = await _lots(client, customer)
        refused = await _top_up(client, tossed_token, customer, {})
        assert refused.status_code == 403, refused.headers.get("location")
        assert await _lots(client, customer) == before
    finally:
        client.cookies.jar.clear()
        for cookie in victims:
            client.cookies.jar.set_cookie(cookie)


async def test_two_tabs_share_the_sessions_token_and_a_sign_out_then_sign_in_gives_a_new_one(database_url):
    """Pages open in two tabs carry the one token of their session, and both post; a sign-out takes
    its own token and a sign-in after it works and begins a new token, the old one refused then."""
    async with api_client(database_url, admin=ADMIN_KEY, console=True) as client:
        book = f"csrf-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/price-books", headers=ADMIN, json={**PRICE_BOOK, "id": book})).status_code == 201
        customer = f"csrf-{uuid.uuid4().hex[:8]}"
        assert (await client.post("/v1/customers", headers=ADMIN,
                                  json={"id": customer, "price_book": book})).status_code == 201
        token = await sign_in(client, ADMIN_KEY)
        tabs = [await client.get(f"/console/customers/{customer}"),
                await client.get(f"/console/customers/{customer}/top-up")]
        assert [re.search(r'name="_csrf_token" value="([^"]+)"', t.text).group(1) for t in tabs] == [token, token]
        for _ in tabs:
            assert (await _top_up(client, token, customer, {})).status_code == 303
        assert [lot["granted"] for lot in await _lots(client, customer)] == ["7.00", "7.00"]
        out = await client.post("/console/sign-out", data={"_csrf_token": token}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"].endswith("/console/sign-in"), out.text
        again = await sign_in(client, ADMIN_KEY)
        assert again != token
        assert (await _top_up(client, token, customer, {})).status_code == 403  # the earlier session's
        assert (await _top_up(client, again, customer, {})).status_code == 303
        assert [lot["granted"] for lot in await _lots(client, customer)] == ["7.00", "7.00", "7.00"]
