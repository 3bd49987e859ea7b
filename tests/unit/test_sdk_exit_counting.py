"""The async client's block exit counts the prompt (and a stream meter's text) with tiktoken when
no usage was recorded: for a big prompt, off the event loop's thread, with the same counts."""
from __future__ import annotations

import asyncio
import json
import threading

import httpx

from api.client import AsyncClient

N = 200_000  # "hello" then " hello" N-1 times: N tokens in cl100k_base (one per word)
PROMPT = "hello" + " hello" * (N - 1)


def _server(settles: list[dict]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/reservations":
            return httpx.Response(201, json={"id": "res_1", "status": "held", "expires_at": None})
        settles.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "res_1", "status": "settled"})
    return httpx.MockTransport(handle)


def _counted_on(tt: AsyncClient) -> list[threading.Thread]:
    threads: list[threading.Thread] = []
    counter, count_text = tt.counter, tt.counter.count_text

    def watched(text, model):
        threads.append(threading.current_thread())
        return count_text(text, model)
    counter.count_text = watched  # type: ignore[method-assign]
    return threads


async def test_an_async_exit_counts_a_big_prompt_off_the_event_loop_with_the_same_counts(tmp_path):
    """Before, 200,000 tokens of prompt and 50,000 of streamed output were encoded on the loop's
    thread (every other task of the loop stopped meanwhile); now in a worker thread."""
    settles: list[dict] = []
    async with AsyncClient("http://tt", "secret", transport=_server(settles), spool_dir=tmp_path,
                           flush_spool=False) as tt:
        threads = _counted_on(tt)
        async with tt.reserve("acme", "model-a", prompt=PROMPT, max_output_tokens=10) as r:
            meter = r.stream_meter()
            meter.add("hello")
            for _ in range(49_999):
                meter.add(" hello")
    assert settles == [{"usage": {"input_tokens": N, "output_tokens": 50_000}, "final": True}]
    assert len(threads) == 2 and threading.main_thread() not in threads


async def test_an_async_exit_cancelled_while_counting_still_settles(tmp_path):
    settles: list[dict] = []
    async with AsyncClient("http://tt", "secret", transport=_server(settles), spool_dir=tmp_path,
                           flush_spool=False) as tt:
        async def block() -> None:
            async with tt.reserve("acme", "model-a", prompt=PROMPT, max_output_tokens=10) as r:
                r.stream_meter().add("hello")
                entered.set()
                await asyncio.sleep(0)  # then the exit, cancelled below while it counts
        entered = asyncio.Event()
        task = asyncio.create_task(block())
        await entered.wait()
        await asyncio.sleep(0)
        task.cancel()  # the block has been left: its exit is counting the prompt
        [outcome] = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
    assert settles == [{"usage": {"input_tokens": N, "output_tokens": 1}, "final": True}]


async def test_a_small_prompt_is_counted_as_before(tmp_path):
    settles: list[dict] = []
    async with AsyncClient("http://tt", "secret", transport=_server(settles), spool_dir=tmp_path,
                           flush_spool=False) as tt:
        async with tt.reserve("acme", "model-a", prompt="hello hello hello", max_output_tokens=10):
            pass
    assert settles == [{"usage": {"input_tokens": 3, "output_tokens": 0}, "final": True}]
