"""A blocking Client made before a fork (gunicorn --preload, a multiprocessing pool): the child
has none of the parent's threads (the background settler's, the spool replay's), and the
parent's pooled connections are the parent's. The child's calls go on their own."""
from __future__ import annotations

import json
import os
import select

import pytest

from api.client import Client
from tests.api.test_sdk_durability import ADMIN, ANSWER_CEILING_S, new_customer, reservation

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")


def in_child(tt: Client, customer: str) -> dict:
    """Run one block and a close in a forked child; what it reported, or {"hung": ...} should the
    child not finish within the answer ceiling (then it is killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit handlers
        try:
            with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                r.record(input_tokens=1000, output_tokens=400)
            tt.close()
            report = {"id": r.id, "queued": r.queued, "settlement": r.settlement}
        except BaseException as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([read], [], [], ANSWER_CEILING_S)
            if not ready:
                os.kill(pid, 9)
                return {"hung": out.decode()}
            chunk = os.read(read, 65536)
            if not chunk:
                return json.loads(out)
            out += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("background", [False, True], ids=["settle", "background_settle"])
def test_a_client_made_before_a_fork_settles_in_the_child(live, spool_dir, background):
    """With background_settle, the child's block exit waited forever on the parent's settler
    thread, which the child does not have: the child hung, its hold left open."""
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, background_settle=background) as tt:
        tt.get(f"/v1/customers/{customer}/wallet")  # a pooled connection, the parent's
        report = in_child(tt, customer)
        assert "id" in report, report
        assert report["queued"] is background
        view = reservation(url, report["id"])
        assert view["status"] == "settled" and view["charged"] == "0.028" and len(view["charges"]) == 1
        # the parent's client goes on as before
        assert tt.get(f"/v1/customers/{customer}/wallet")["available"] == "9.972"
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_child_whose_threads_all_call_at_once_gets_connections_and_a_settler_of_its_own(live, spool_dir):
    """gunicorn --preload with --threads: a forked worker's first requests come on several threads
    at once. The first to call made the child's connections and settler, and had marked the client
    as the child's before they were in place: a thread arriving meanwhile went on with the
    parent's (its pooled sockets, shared with every other child; a settler whose thread the child
    does not have, where its block's exit waited forever)."""
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, background_settle=True) as tt:
        tt.get(f"/v1/customers/{customer}/wallet")  # a pooled connection, the parent's
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            import threading
            import time

            import httpx

            class SlowToMake(httpx.Client):  # the window a busy machine opens (TLS context, certifi)
                def __init__(self, *args, **kwargs) -> None:
                    time.sleep(0.05)
                    super().__init__(*args, **kwargs)

            httpx.Client = SlowToMake  # the child's only
            ids, errors, go = [], [], threading.Barrier(8)

            def block() -> None:
                go.wait()
                try:
                    with tt.reserve(customer, "model-a", input_tokens=1000, max_output_tokens=500) as r:
                        r.record(input_tokens=1000, output_tokens=400)
                    ids.append(r.id)
                except BaseException as exc:
                    errors.append(repr(exc))

            threads = [threading.Thread(target=block, daemon=True) for _ in range(8)]
            for thread in threads:
                thread.start()
            until = time.monotonic() + ANSWER_CEILING_S / 2
            for thread in threads:
                thread.join(max(0.0, until - time.monotonic()))
            hung = sum(thread.is_alive() for thread in threads)
            if not hung:
                tt.close()
            os.write(write, json.dumps({"ids": ids, "errors": errors, "hung": hung}).encode())
            os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], ANSWER_CEILING_S)
        report = json.loads(os.read(read, 65536)) if ready else {"hung": "all"}
        os.close(read)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        assert report["hung"] == 0 and not report["errors"] and len(report["ids"]) == 8, report
        for reservation_id in report["ids"]:
            view = reservation(url, reservation_id)
            assert view["status"] == "settled" and len(view["charges"]) == 1
        assert tt.get(f"/v1/customers/{customer}/wallet")["available"] == "9.776"  # 10 - 8 x 0.028
