"""The OpenAI-compatible server, driven by the official ``openai`` client, on the real engine.

Every server here listens on 127.0.0.1 with a port the system picks.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from mixtral_desk.core.engine import ChatMessage, EngineHost, LoadOptions, SamplingOptions
from mixtral_desk.core.server import ApiServer, ServerStartError

KEY = "test-key-123"
MODEL = "tiny-moe"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
LONG = {"ignore_eos": True, "max_tokens": 4000}  # ~40 s of generation on the tiny model
PROMPTLY_S = 8.0  # a fraction of that, with room for a machine busy with other work
FREE_S = 2.0  # from the disconnect to the engine being free (~0.1 s when idle)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[EngineHost]:
    with EngineHost() as host:
        host.load(LoadOptions(model_path=tiny_model, n_ctx=4096))
        list(host.chat([ChatMessage("user", "Hi")], SamplingOptions(max_tokens=4)))  # warm up
        yield host


@pytest.fixture(scope="module")
def server(engine: EngineHost) -> Iterator[ApiServer]:
    with ApiServer(engine, MODEL, port=0, api_key=KEY) as running:
        yield running


@pytest.fixture
def client(server: ApiServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0,
                       timeout=60) as opened:
        yield opened


def test_it_listens_on_loopback_with_a_chosen_port(server: ApiServer) -> None:
    assert server.is_running
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_the_model_list_names_the_loaded_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat_without_streaming(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=HELLO,
                                            max_tokens=8, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.model == MODEL
    [choice] = answer.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text
    assert reasons[-1] in ("stop", "length") and not any(reasons[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    timings = (chunks[-1].model_extra or {})["timings"]  # llama-server's extension
    assert timings["predicted_n"] == chunks[-1].usage.completion_tokens
    assert timings["predicted_per_second"] > 0
    assert all("timings" not in (c.model_extra or {}) for c in chunks[:-1])
    # greedy: the streamed text is the non-streamed answer
    same = client.chat.completions.create(model=MODEL, messages=HELLO,
                                          max_tokens=8, temperature=0)
    assert same.choices[0].message.content == text


def test_completions_streamed_and_not(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                       temperature=0)
    assert answer.object == "text_completion"
    assert answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    assert answer.choices[0].finish_reason == "length"
    streamed = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == answer.choices[0].text


def test_a_wrong_or_missing_key_is_refused(server: ApiServer) -> None:
    with openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as wrong, \
            pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 401
    response = httpx2.get(server.base_url + "/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_errors_have_the_openai_shape(server: ApiServer, client: openai.OpenAI) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    bad_json = httpx2.post(server.base_url + "/chat/completions", content=b"{nope",
                          headers=headers)
    assert bad_json.status_code == 400
    assert set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    missing = httpx2.post(server.base_url + "/chat/completions", json={"model": MODEL},
                         headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    unknown = httpx2.get(server.url + "/v1/nothing", headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert caught.value.param == "n"


def test_twenty_concurrent_requests_are_all_answered(server: ApiServer) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0,
                                      timeout=120) as client:
            async def one(i: int) -> str:
                answer = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Count to {i}"}],
                    max_tokens=4, temperature=0)
                return answer.choices[0].message.content or ""
            return await asyncio.gather(*(one(i) for i in range(20)))

    started = time.perf_counter()
    answers = asyncio.run(run())
    elapsed = time.perf_counter() - started
    assert len(answers) == 20 and all(answers)
    print(f"20 concurrent requests answered in {elapsed:.2f} s")
    assert server.api.replies.queue.waiting == 0 and not server.api.replies.queue.busy


def _start_long_stream(server: ApiServer) -> tuple[httpx2.Client, httpx2.Response]:
    http = httpx2.Client(timeout=60)
    request = http.build_request(
        "POST", server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
        json={"model": MODEL, "messages": HELLO, "stream": True, **LONG})
    response = http.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    contents = 0
    while contents < 5:  # the reply is flowing
        if '"content"' in next(lines):
            contents += 1
    return http, response


def test_a_client_that_disconnects_frees_the_engine(
    server: ApiServer, client: openai.OpenAI
) -> None:
    http, response = _start_long_stream(server)
    response.close()  # the client goes away mid-stream
    http.close()
    started = time.perf_counter()
    queue = server.api.replies.queue
    while queue.busy and time.perf_counter() - started < PROMPTLY_S:
        time.sleep(0.005)
    freed = time.perf_counter() - started
    print(f"engine free {freed:.3f} s after the disconnect")
    assert freed < FREE_S
    answer = client.chat.completions.create(model=MODEL, messages=HELLO,
                                            max_tokens=4, temperature=0)
    elapsed = time.perf_counter() - started
    assert answer.choices[0].message.content
    print(f"next request answered {elapsed:.2f} s after the disconnect")
    assert elapsed < PROMPTLY_S  # it did not wait for the abandoned 4000 tokens


# Stopping the server cuts the open streams; asyncio may log its last writes to them, depending
# on timing.
@pytest.mark.allow_log("asyncio", "socket.send() raised exception")
def test_stop_ends_running_streams_promptly(engine: EngineHost) -> None:
    server = ApiServer(engine, MODEL, port=0)
    server.start()
    http, response = _start_long_stream(server)
    started = time.perf_counter()
    server.stop()
    elapsed = time.perf_counter() - started
    response.close()
    http.close()
    assert not server.is_running
    assert elapsed < PROMPTLY_S
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(server.base_url + "/models")
    server.start()  # can be started again (the GUI toggle)
    try:
        assert httpx2.get(server.base_url + "/models").status_code == 200
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error(engine: EngineHost, server: ApiServer) -> None:
    other = ApiServer(engine, MODEL, port=server.port)
    with pytest.raises(ServerStartError, match=str(server.port)):
        other.start()
    assert not other.is_running


def test_the_serve_command_serves_until_ctrl_c(tiny_model: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_desk", "serve", "--model", str(tiny_model),
         "--port", "0", "--ctx", "2048", "--model-id", "cli-model"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        while "Serving" not in line:
            line = process.stderr.readline()
            assert line, "serve exited before listening"
        url = re.search(re.escape("http://127.0.0.1:") + r"\d+/v1", line)
        assert url is not None, line
        models = httpx2.get(url.group(0) + "/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["cli-model"]
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
