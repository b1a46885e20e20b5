"""Header values the planner sizes things by are checked when a model is inspected.

A fuzzed copy of the tiny Mixtral-shaped model with one key set to an absurd value (0, -1, 2**31,
2**32 - 1, 10**8) or to one its tensors contradict is refused at once with a GGUFMetadataError
that names the key and both values: by inspect_model, by the remote header reader, and by the
CLI's inspect, plan and chat (one line, exit 1, no traceback). Before these checks, 4294967295
layers made ``plan`` and ``chat`` die in a MemoryError, 10**8 made them hang, and a training
context of 2**32 - 1 reached llama-cpp-python as -1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from mixtral_desk.core.cli import main
from mixtral_desk.core.context_size import CANDIDATES, automatic_context
from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.errors import GGUFMetadataError
from mixtral_desk.core.gguf.hparams import MAX_CONTEXT
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.gguf.remote_header import read_remote_facts
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.planner import plan_offload, simulated_machine
from mixtral_desk.core.units import GiB
from tests.core.test_cli import assert_clean_failure, cli
from tests.hub_server import LoopbackHub
from tests.mixtral_header import Q, TensorSpec, with_value, write_header_model

ABSURD = (0, -1, 2**31, 2**32 - 1, 10**8)
#: A value each key's own tensors contradict (the tiny model: 2 layers, 4 experts / 2 used,
#: 4 heads / 2 KV heads, embedding 64).
CONTRADICTED = {
    "llama.block_count": 3,
    "llama.expert_count": 8,
    "llama.expert_used_count": 5,  # more than the 4 experts
    "llama.attention.head_count": 128,  # more heads than embedding values
    "llama.attention.head_count_kv": 3,  # does not divide 4 heads
    "llama.embedding_length": 128,  # token_embd.weight has rows of 64
}
KEYS = ("llama.context_length", "llama.block_count", "llama.expert_count",
        "llama.expert_used_count", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.embedding_length", "llama.feed_forward_length")
CASES = [(key, value) for key in KEYS for value in ABSURD] + list(CONTRADICTED.items())

REPO = "mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF"  # the catalog's mixtral-8x7b-instruct-q4_k_m
FILE = "Mixtral-8x7B-Instruct-v0.1.Q4_K_M.gguf"


def refusal(path: Path) -> GGUFMetadataError:
    with pytest.raises(GGUFMetadataError) as info:
        inspect_model(path)
    return info.value


# --- inspect_model ------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), CASES)
def test_an_absurd_or_contradicted_value_is_refused_naming_the_key(
        tiny_model: Path, tmp_path: Path, key: str, value: int) -> None:
    path = with_value(tiny_model, tmp_path / "fuzzed.gguf", key, value)
    error = refusal(path)
    message = str(error)
    assert error.key == key
    assert message.startswith(f"{path}: the header") and key in message
    assert str(value) in message, message


def test_the_issues_header_names_both_values(tiny_model: Path, tmp_path: Path) -> None:
    path = with_value(tiny_model, tmp_path / "m.gguf", "llama.block_count", 2**32 - 1)
    assert str(refusal(path)).startswith(
        f"{path}: the header says 4294967295 layers (llama.block_count) but the file has tensors "
        "for 2;")
    path = with_value(tiny_model, tmp_path / "e.gguf", "llama.expert_count", 8)
    assert str(refusal(path)).startswith(
        f"{path}: the header says 8 experts (llama.expert_count) but the expert tensor "
        "blk.0.ffn_gate_exps.weight holds 4;")


def tiny_tensors(tiny_model: Path) -> list[TensorSpec]:
    """The tiny model's tensor table in write_header_model's terms (numpy order)."""
    return [(t.name, tuple(reversed(t.shape)), Q.__members__[t.ggml_type])
            for t in inspect_model(tiny_model).tensors]


TINY_KV = {"llama.context_length": 4096, "llama.embedding_length": 64, "llama.block_count": 2,
           "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
           "llama.attention.head_count_kv": 2, "llama.expert_count": 4,
           "llama.expert_used_count": 2}


@pytest.mark.parametrize("value", [0, 2**31, 2**32 - 1, 10**8, 300])
def test_a_vocabulary_size_that_token_embd_contradicts(tiny_model: Path, tmp_path: Path,
                                                       value: int) -> None:
    path = write_header_model(tmp_path / "v.gguf", tiny_tensors(tiny_model),
                              {**TINY_KV, "llama.vocab_size": value})
    error = refusal(path)
    assert error.key == "llama.vocab_size" and str(value) in str(error)


def test_a_token_list_that_token_embd_contradicts(tiny_model: Path, tmp_path: Path) -> None:
    path = write_header_model(tmp_path / "t.gguf", tiny_tensors(tiny_model), TINY_KV, vocab=300)
    error = refusal(path)
    assert error.key == "tokenizer.ggml.tokens"
    assert "the header says 300 tokens (tokenizer.ggml.tokens) but token_embd.weight has 269 " \
           "rows" in str(error)


def test_what_real_models_do_is_accepted(tiny_model: Path, tmp_path: Path) -> None:
    """No false alarms: a recurrent model's zero heads and feed-forward length (no attention
    or feed-forward tensors), next-token-prediction layers without tensors, per-layer lists."""
    e = 64
    mamba: list[TensorSpec] = [("token_embd.weight", (100, e), Q.F32)]
    mamba += [(f"blk.{i}.ssm_in.weight", (4 * e, e), Q.F32) for i in range(3)]
    facts = inspect_model(write_header_model(
        tmp_path / "mamba.gguf", mamba,
        {"llama.block_count": 3, "llama.embedding_length": e, "llama.context_length": 1 << 20,
         "llama.attention.head_count": 0, "llama.feed_forward_length": 0,
         "llama.vocab_size": 100}))
    assert facts.n_layers == 3 and facts.n_head == 0
    nextn = inspect_model(write_header_model(
        tmp_path / "nextn.gguf", tiny_tensors(tiny_model),
        {**TINY_KV, "llama.block_count": 3, "llama.nextn_predict_layers": 1}))
    assert nextn.n_layers == 3
    arrays = write_header_model(tmp_path / "arrays.gguf", tiny_tensors(tiny_model),
                                {**TINY_KV, "llama.attention.head_count_kv": [2, 1],
                                 "llama.feed_forward_length": [128, 128]})
    assert inspect_model(arrays).n_head_kv == 2


def test_per_layer_lists_must_have_one_value_per_layer(tiny_model: Path, tmp_path: Path) -> None:
    path = write_header_model(tmp_path / "list.gguf", tiny_tensors(tiny_model),
                              {**TINY_KV, "llama.attention.head_count": [4, 4, 4]})
    error = refusal(path)
    assert error.key == "llama.attention.head_count"
    assert "is a list of 3 values, but the model has 2 layers" in str(error)


def many_layers(path: Path, n_layers: int, *, declared: bool = True) -> Path:
    """A small MoE header (sparse data) with ``n_layers`` layers, each with its tensors
    (``declared``: and ``llama.block_count`` saying so; else no such key)."""
    e, f, x = 64, 128, 4
    tensors: list[TensorSpec] = [("token_embd.weight", (300, e), Q.F32)]
    for i in range(n_layers):
        tensors += [(f"blk.{i}.attn_q.weight", (e, e), Q.F32),
                    (f"blk.{i}.ffn_gate_exps.weight", (x, f, e), Q.F32),
                    (f"blk.{i}.ffn_up_exps.weight", (x, f, e), Q.F32),
                    (f"blk.{i}.ffn_down_exps.weight", (x, e, f), Q.F32)]
    kv = {**TINY_KV, "llama.block_count": n_layers}
    if not declared:
        del kv["llama.block_count"]
    return write_header_model(path, tensors, kv, vocab=300)


@pytest.mark.timeout(60)
def test_llama_cpps_most_layers_plan_at_once_and_one_more_is_refused(tmp_path: Path) -> None:
    """512 layers (llama.cpp's limit) with their tensors is a model: the planner tries every
    placement of it (O(layers²)) in about a second. 513 is refused, as llama.cpp would."""
    facts = inspect_model(many_layers(tmp_path / "512.gguf", 512))
    machine = simulated_machine(ram=64 * GiB, vram=8 * GiB, gpu_name="RTX 4060")
    plan = plan_offload(memory_model_from_facts(facts, 4096), machine)
    assert plan.n_layers == 512 and plan.fits
    error = refusal(many_layers(tmp_path / "513.gguf", 513))
    assert error.key == "llama.block_count"
    assert "the header says llama.block_count is 513, outside the range a model can have (1 to " \
           "512)" in str(error)
    undeclared = refusal(many_layers(tmp_path / "513-undeclared.gguf", 513, declared=False))
    assert undeclared.key == "llama.block_count"
    assert "the file has tensors for 513 layers, more than a model can have (512)" \
        in str(undeclared)


# --- the automatic context ----------------------------------------------------------------------

def test_the_automatic_context_stays_within_the_trained_one(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    big = simulated_machine(ram=64 * GiB)
    short = with_value(tiny_model, tmp_path / "short.gguf", "llama.context_length", 1000)
    assert automatic_context(inspect_model(short), big) == 1000
    longest = with_value(tiny_model, tmp_path / "long.gguf", "llama.context_length", MAX_CONTEXT)
    assert automatic_context(inspect_model(longest), big) == CANDIDATES[0]


@pytest.mark.parametrize("ctx", ["-1", "0", "4294967295", "lots"])
def test_plan_refuses_a_context_length_no_load_accepts(
        tiny_model: Path, ctx: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "--model", str(tiny_model), "--ctx", ctx, "--vram", "0", "--ram", "8GiB"])
    assert info.value.code == 2
    assert "is not a context length from 32 to 2097152 tokens" in capsys.readouterr().err


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("command", ["inspect", "plan", "chat"])
def test_cli_commands_say_which_key_in_one_line(
        tiny_model: Path, tmp_path: Path, key: str, command: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = with_value(tiny_model, tmp_path / "fuzzed.gguf", key, 2**32 - 1)
    argv = {"inspect": ["inspect", str(path)],
            "plan": ["plan", "--model", str(path), "--vram", "0", "--ram", "8GiB"],
            "chat": ["chat", "--model", str(path), "--prompt", "hello"]}[command]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"mixtral-desk: error: {path}: the header") and key in lines[0]


@pytest.mark.parametrize(("key", "value", "command"), [
    ("llama.block_count", 2**32 - 1, "plan"),  # was: MemoryError in memory_model.py
    ("llama.block_count", 10**8, "plan"),  # was: over 60 s and 5 GB
    ("llama.block_count", 2**31, "plan"),  # was: 23.8 GB, killed by the kernel
    ("llama.block_count", 2**32 - 1, "chat"),
    ("llama.context_length", 2**32 - 1, "chat"),  # was: "Array length must be >= 0, not -1"
])
def test_the_real_cli_fails_cleanly_and_at_once(tiny_model: Path, tmp_path: Path, key: str,
                                                value: int, command: str) -> None:
    path = with_value(tiny_model, tmp_path / "fuzzed.gguf", key, value)
    args: list[str | Path] = (["plan", "--model", path] if command == "plan"
                              else ["chat", "--model", path, "--prompt", "hello"])
    result = cli(*args, timeout=60)
    assert_clean_failure(result, key, str(value))
    assert result.stdout == ""


# --- a remote header --------------------------------------------------------------------------

@pytest.fixture
def fuzzed_hub(monkeypatch: pytest.MonkeyPatch, tiny_model: Path,
               tmp_path: Path) -> Iterator[LoopbackHub]:
    """The loopback Hub serving the catalog's Mixtral file as the tiny model with 10**8
    layers."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    path = with_value(tiny_model, tmp_path / FILE, "llama.block_count", 10**8)
    with LoopbackHub() as server:
        server.add_repo(REPO, {FILE: path.read_bytes()})
        yield server


def test_a_remote_header_is_checked_the_same_way(fuzzed_hub: LoopbackHub, tmp_path: Path) -> None:
    with pytest.raises(GGUFMetadataError) as info:
        read_remote_facts(HubClient(fuzzed_hub.url, use_stored_token=False), REPO, [FILE])
    assert info.value.key == "llama.block_count"
    assert str(info.value).startswith(
        f"{REPO}/{FILE}: the header says 100000000 layers (llama.block_count) but the file has "
        "tensors for 2")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "mixtral_desk", "plan", "--model", "mixtral-8x7b-instruct-q4_k_m",
         "--endpoint", fuzzed_hub.url, "--vram", "12GiB", "--ram", "32GiB"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        env=env)
    assert_clean_failure(result, "llama.block_count", "100000000")
