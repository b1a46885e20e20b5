"""The server's pieces without a model: the bind rule, the key check, the fair queue, schemas."""

from __future__ import annotations

import asyncio

import pytest

from mixtral_desk.core.cli import main
from mixtral_desk.core.engine import SamplingOptions
from mixtral_desk.core.network import is_loopback_host
from mixtral_desk.core.server import (
    ApiError,
    ApiServer,
    FairQueue,
    QueueFullError,
    ServerConfigError,
    check_bind,
)
from mixtral_desk.core.server.auth import check_key
from mixtral_desk.core.server.schemas import ChatCompletionRequest, CompletionRequest


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost",
                                  "LOCALHOST", "::ffff:127.0.0.1"])
def test_loopback_addresses_need_no_key(host: str) -> None:
    assert is_loopback_host(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "192.168.1.20", "my-laptop.local",
                                  "app.localhost"])
def test_other_addresses_need_a_key(host: str) -> None:
    """0.0.0.0 and :: bind every interface: the whole network could reach the model."""
    assert not is_loopback_host(host)
    with pytest.raises(ServerConfigError, match="API key"):
        check_bind(host, None)
    with pytest.raises(ServerConfigError):
        check_bind(host, "")
    check_bind(host, "secret")


def test_the_server_refuses_a_public_address_without_a_key_before_binding() -> None:
    class NoEngine:  # never used: the check comes first
        pass

    with pytest.raises(ServerConfigError, match=r"0\.0\.0\.0"):
        ApiServer(NoEngine(), "m", host="0.0.0.0")  # type: ignore[arg-type]


def test_serve_on_all_interfaces_without_a_key_exits_with_a_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code = main(["serve", "--model", "/nonexistent.gguf", "--host", "0.0.0.0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "without an API key" in err and "Traceback" not in err


def test_key_check() -> None:
    check_key(None, None)
    check_key("Bearer abc", "abc")
    for header in (None, "", "Bearer", "Basic abc", "Bearer abd"):
        with pytest.raises(ApiError) as caught:
            check_key(header, "abc")
        assert caught.value.status == 401


def test_the_queue_hands_turns_out_in_arrival_order() -> None:
    async def run() -> list[int]:
        queue = FairQueue()
        order: list[int] = []

        async def worker(i: int) -> None:
            async with queue.turn():
                order.append(i)
                await asyncio.sleep(0.001)

        await asyncio.gather(*(worker(i) for i in range(30)))
        assert not queue.busy and queue.waiting == 0
        return order

    assert asyncio.run(run()) == list(range(30))


def test_a_waiter_that_leaves_gives_up_its_place() -> None:
    async def run() -> list[str]:
        queue = FairQueue()
        order: list[str] = []
        await queue.acquire()  # the running request

        async def waiter(name: str) -> None:
            async with queue.turn():
                order.append(name)

        first = asyncio.create_task(waiter("first"))
        leaving = asyncio.create_task(waiter("leaving"))
        last = asyncio.create_task(waiter("last"))
        await asyncio.sleep(0)
        assert queue.waiting == 3
        leaving.cancel()
        await asyncio.sleep(0)
        assert queue.waiting == 2
        queue.release()
        await asyncio.gather(first, last)
        assert not queue.busy
        return order

    assert asyncio.run(run()) == ["first", "last"]


def test_a_full_queue_refuses_at_once() -> None:
    async def run() -> None:
        queue = FairQueue(max_waiting=1)
        await queue.acquire()
        waiting = asyncio.create_task(queue.acquire())
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await queue.acquire()
        queue.release()
        await waiting
        queue.release()
        assert not queue.busy

    asyncio.run(run())


def test_request_fields_override_the_default_sampling() -> None:
    base = SamplingOptions(temperature=0.7, top_k=40, max_tokens=1024)
    request = ChatCompletionRequest.model_validate({
        "model": "x", "messages": [{"role": "developer", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "temperature": 0, "max_completion_tokens": 5, "stop": "END", "top_k": 7,
        "user": "ignored-field"})
    sampling = request.sampling(base)
    assert (sampling.temperature, sampling.max_tokens, sampling.stop, sampling.top_k) == (
        0.0, 5, ["END"], 7)
    assert sampling.min_p == base.min_p
    assert [(m.role, m.content) for m in request.chat_messages()] == [
        ("system", "Be brief."), ("user", "Hi")]
    completion = CompletionRequest.model_validate({"prompt": ["Once"]})
    assert completion.text == "Once"
    assert completion.sampling(base).max_tokens == 16  # OpenAI's default for completions
