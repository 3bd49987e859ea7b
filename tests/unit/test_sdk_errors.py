"""Every problem `code` the server can answer is a typed error of the SDK, importable from
api.client, so a caller can catch what it means rather than parse `.code`."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import httpx
import pytest

import api.client
import ledger
import pricing
import wallets
from api.client_errors import ERRORS, NotFound, ServiceUnavailable, TokentillError, raise_for
from api.errors import CODE_BY_STATUS, STATUS_BY_CODE

ROOT = Path(api.__file__).parent
# The base classes' codes: never raised themselves, only their subclasses (each with its own).
BASES = {"ledger_error", "wallet_error", "pricing_error"}


def domain_codes() -> set[str]:
    codes = set()
    for package in (ledger, pricing, wallets):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            for obj in vars(importlib.import_module(info.name)).values():
                if inspect.isclass(obj) and issubclass(obj, Exception) and isinstance(getattr(obj, "code", None), str):
                    codes.add(obj.code)
    return codes - BASES


def edge_codes() -> set[str]:
    """Codes the HTTP layer answers itself (its handlers, guards and framework errors)."""
    sources = [*ROOT.glob("*.py"), *(ROOT / "routes").glob("*.py")]
    written = {code for path in sources if not path.name.startswith(("client", "delivery"))
               for code in re.findall(r'(?:ApiError\(|problem\(\d+, )\s*"([a-z_]+)"', path.read_text())}
    return written | set(CODE_BY_STATUS.values())


CODES = sorted({code for code, status in STATUS_BY_CODE.items() if status >= 400} | domain_codes() | edge_codes())
STATUS = {**{code: status for status, code in CODE_BY_STATUS.items()}, **STATUS_BY_CODE,
          "not_ready": 503, "internal_error": 500}


def test_the_codes_are_found():
    assert {"insufficient_funds", "invalid_cursor", "not_ready", "currency_mismatch", "request_timeout"} <= set(CODES)


@pytest.mark.parametrize("code", CODES)
def test_every_problem_code_raises_its_own_typed_error(code):
    status = STATUS.get(code, 422)
    answer = httpx.Response(status, json={"status": status, "code": code, "detail": "x"})
    with pytest.raises(TokentillError) as raised:
        raise_for(answer)
    kind = type(raised.value)
    assert kind is not TokentillError and ERRORS[code] is kind, f"{code} is raised as a bare TokentillError"
    assert getattr(api.client, kind.__name__) is kind and kind.__name__ in api.client.__all__
    assert (raised.value.status, raised.value.code) == (status, code)


def test_kinds_of_one_meaning_are_caught_together():
    assert issubclass(ERRORS["not_ready"], ServiceUnavailable)
    assert issubclass(ERRORS["unknown_price_book"], NotFound) and issubclass(ERRORS["unknown_price_version"], NotFound)
    # a stored thing's id or time taken by another definition: a Conflict, not a key reused
    for code in ("price_version_conflict", "customer_exists"):
        assert issubclass(ERRORS[code], ERRORS["conflict"])
        assert not issubclass(ERRORS[code], ERRORS["idempotency_conflict"])


def test_a_success_that_is_not_json_is_an_error_not_a_body(tmp_path):
    """A base_url pointing at another web server (a proxy's sign-in page, a docs site) answers
    200 with HTML: it came back as the call's body, {'code': 'http_error', ...}, and a reserve
    block entered on it failed only at its exit (KeyError 'id'). It is raised where it comes."""
    from api.client import Client

    page = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>Sign in</html>",
                                                              headers={"content-type": "text/html"}))
    with Client("http://tt", "secret", transport=page, spool_dir=tmp_path, flush_spool=False) as tt:
        with pytest.raises(TokentillError, match="not JSON") as raised:
            tt.get("/v1/customers/acme/wallet")
        assert (raised.value.status, raised.value.code) == (200, "http_error")
        with pytest.raises(TokentillError, match="not JSON"), \
                tt.reserve("acme", "model-a", input_tokens=1, max_output_tokens=1):
            raise AssertionError("never entered")


@pytest.mark.parametrize("code", ["insufficient_funds", "budget_exceeded", "invalid_amount", "service_unavailable"])
def test_a_typed_error_crosses_a_process_boundary_whole(code):
    """A worker of a multiprocessing pool (or a ProcessPoolExecutor) that raises a typed error
    hands it to its parent pickled. Unpickling called the class with the message alone, a
    TypeError (missing 'code', 'detail' and 'body') that broke the pool's result."""
    import pickle

    status = STATUS.get(code, 422)
    body = {"status": status, "code": code, "detail": "not enough", "budget_id": "bud_1", "currency": "JPY"}
    answer = httpx.Response(status, json=body, headers={"Retry-After": "7"})
    with pytest.raises(TokentillError) as raised:
        raise_for(answer)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is ERRORS[code]
    assert (copy.status, copy.code, copy.detail, copy.body, copy.retry_after) == (status, code, "not enough", body, 7.0)
    assert str(copy) == str(raised.value)


def test_a_spooled_settlement_crosses_a_process_boundary_whole(tmp_path):
    import pickle

    from api.client_errors import SettlementSpooled
    from api.spool import SpoolRecord

    record = SpoolRecord("POST", "/v1/reservations/res_1/settle", {"usage": {"output_tokens": 3}, "final": True},
                         "res_1:settle:0", "res_1", "http://tt", "key_1", reason="HTTP 503")
    copy = pickle.loads(pickle.dumps(SettlementSpooled(record, tmp_path / "a.jsonl")))
    assert (copy.record, copy.path, str(copy)) == (record, tmp_path / "a.jsonl",
                                                   str(SettlementSpooled(record, tmp_path / "a.jsonl")))


@pytest.mark.parametrize(("status", "kind"), [(429, "RateLimited"), (503, "ServiceUnavailable"),
                                              (401, "Unauthorized"), (403, "Forbidden"), (404, "NotFound"),
                                              (408, "RequestTimeout"), (413, "PayloadTooLarge"),
                                              (500, "InternalError")])
def test_an_answer_of_a_proxy_in_front_is_typed_by_its_status(tmp_path, status, kind):
    """A rate limit, load balancer or gateway in front of the server answers in its own shape (an
    HTML page, or JSON without a problem `code`). README: a 429 or 503 whose Retry-After exceeds
    the call's budget is raised "as ServiceUnavailable (RateLimited) with .retry_after"; it was a
    bare TokentillError, which `except RateLimited` let through. Its code stays `http_error`
    (not tokentill's answer); its class is its status's."""
    from api.client import Client

    for content in ("<html>Too busy</html>", '{"message": "slow down"}'):
        page = httpx.MockTransport(lambda request, c=content: httpx.Response(
            status, text=c, headers={"Retry-After": "60", "content-type": "text/html"}))
        with Client("http://tt", "secret", transport=page, spool=False, flush_spool=False, backoff_s=0.001,
                    retry_budget_s=0.01) as tt, pytest.raises(TokentillError) as raised:
            tt.get("/v1/customers/acme/wallet")
        assert type(raised.value) is getattr(api.client, kind), content
        assert (raised.value.status, raised.value.code, raised.value.retry_after) == (status, "http_error", 60.0)


def test_an_answer_of_a_status_without_a_meaning_of_its_own_stays_a_bare_error():
    with pytest.raises(TokentillError) as raised:
        raise_for(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert type(raised.value) is TokentillError and raised.value.code == "http_error"
