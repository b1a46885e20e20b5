"""Converting a Mixtral file with one tensor per expert (Dec-2023) into merged experts.

The tiny files are real models: the per-expert one is the merged one with each expert written as
its own tensor (the same weights), so a correct conversion gives back the merged file byte for
byte, and llama.cpp (in the engine process) loads and runs the result. The full-size test
converts a sparse 15.6 GB file shaped like TheBloke's Q2_K.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mixtral_desk.core.errors import GGUFError, PerExpertModelError
from mixtral_desk.core.gguf.merge_experts import (
    MergeCancelledError,
    MergeSpaceError,
    merge_experts,
    merged_path,
    plan_merge,
    refuse_per_expert,
)
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.gguf.synthetic import TINY, write_synthetic_model
from mixtral_desk.core.paths import DataPaths
from tests.mixtral_header import (
    MIXTRAL_KV,
    N_EMBD,
    N_EXPERT,
    N_FF,
    N_LAYERS,
    N_VOCAB,
    thebloke_q2_k_tensors,
    write_header_model,
    write_thebloke_q2_k,
)


@pytest.fixture
def per_expert(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return write_synthetic_model(folder / "old-mixtral.gguf", TINY, per_expert=True)


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    folder = tmp_path / "reference"
    folder.mkdir()
    return write_synthetic_model(folder / "new-mixtral.gguf", TINY)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)],
                          capture_output=True, text=True, timeout=180, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANGUAGE": "en"})


def test_the_conversion_gives_back_the_merged_file_byte_for_byte(per_expert: Path,
                                                                   merged: Path) -> None:
    seen: list[tuple[int, int]] = []
    written = merge_experts(per_expert, on_progress=lambda done, total: seen.append((done, total)))
    assert written == merged_path(per_expert) == per_expert.with_name(
        "old-mixtral.merged-experts.gguf")
    assert written.read_bytes() == merged.read_bytes()
    assert seen and seen[-1][0] == seen[-1][1] == plan_merge(per_expert).data_bytes
    assert not list(per_expert.parent.glob("*.part"))
    assert per_expert.exists()  # the original is kept


def test_the_plan_merges_three_groups_per_layer(per_expert: Path) -> None:
    plan = plan_merge(per_expert)
    assert plan.merged_groups == 3 * TINY.n_layers
    names = [t.name for t in plan.tensors]
    assert "blk.0.ffn_gate_exps.weight" in names and "blk.0.ffn_gate.0.weight" not in names
    gate = next(t for t in plan.tensors if t.name == "blk.1.ffn_down_exps.weight")
    assert gate.dims == (TINY.n_ff, TINY.n_embd, TINY.n_expert)


def test_a_per_expert_file_is_refused_before_loading_with_the_way_out(per_expert: Path) -> None:
    with pytest.raises(PerExpertModelError) as caught:
        refuse_per_expert(inspect_model(per_expert))
    message = str(caught.value)
    assert "one tensor per expert" in message and "mixtral-desk merge-experts" in message
    refuse_per_expert(inspect_model(write_synthetic_model(per_expert.with_name("m.gguf"))))


@pytest.mark.slow
def test_chat_refuses_the_old_file_and_runs_the_converted_one(per_expert: Path,
                                                              data_home: DataPaths) -> None:
    refused = cli("chat", "--model", per_expert, "--prompt", "hello", "--max-tokens", "4")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "merge-experts" in refused.stderr
    converted = cli("merge-experts", per_expert)
    assert converted.returncode == 0, converted.stderr
    assert "6 expert tensors merged" in converted.stdout
    reply = cli("chat", "--model", merged_path(per_expert), "--prompt", "hello",
                "--max-tokens", "4", "--seed", "1")
    assert reply.returncode == 0, reply.stderr
    assert "4 tokens" in reply.stderr


def test_merge_experts_writes_where_asked_and_reports_json(per_expert: Path, merged: Path,
                                                           data_home: DataPaths) -> None:
    target = per_expert.with_name("chosen name.gguf")
    result = cli("merge-experts", per_expert, "--output", target, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["output"] == str(target) and report["merged_tensors"] == 3 * TINY.n_layers
    assert report["data_bytes"] == plan_merge(per_expert).data_bytes
    assert target.read_bytes() == merged.read_bytes()
    assert not merged_path(per_expert).exists()


def test_plan_says_the_file_needs_converting(per_expert: Path, data_home: DataPaths) -> None:
    result = cli("plan", "--model", per_expert)
    assert result.returncode == 0, result.stderr
    assert "one tensor per expert" in result.stdout.splitlines()[-1]


def test_a_merged_file_needs_no_conversion(merged: Path) -> None:
    with pytest.raises(GGUFError, match="needs no conversion"):
        merge_experts(merged)


def test_an_existing_target_is_never_overwritten(per_expert: Path) -> None:
    target = merged_path(per_expert)
    target.write_bytes(b"mine")
    with pytest.raises(GGUFError, match="already exists"):
        merge_experts(per_expert)
    assert target.read_bytes() == b"mine"


def test_stopping_leaves_nothing_behind(per_expert: Path) -> None:
    with pytest.raises(MergeCancelledError):
        merge_experts(per_expert, should_stop=lambda: True)
    assert sorted(p.name for p in per_expert.parent.iterdir()) == ["old-mixtral.gguf"]


def test_an_incomplete_set_of_experts_is_refused(tmp_path: Path) -> None:
    tensors = [(name, shape, q) for name, shape, q in thebloke_q2_k_tensors()
               if name != "blk.3.ffn_up.5.weight"]
    path = write_header_model(tmp_path / "holey.gguf", tensors, MIXTRAL_KV, vocab=N_VOCAB)
    with pytest.raises(GGUFError, match=r"incomplete set of experts in layer 3 \(ffn_up"):
        plan_merge(path)


def test_a_disk_too_small_is_said_before_writing(per_expert: Path, small_disk: Path) -> None:
    big = write_synthetic_model(per_expert.with_name("big.gguf"), replace(TINY, n_ff=2048),
                                per_expert=True)  # about 6 MB: more than the 4 MiB disk
    with pytest.raises(MergeSpaceError) as caught:
        merge_experts(big, small_disk / "out.gguf")
    assert caught.value.needed > caught.value.free
    assert list(small_disk.iterdir()) == []


@pytest.mark.slow
def test_a_full_size_sparse_q2_k_converts_and_stays_sparse(tmp_path: Path) -> None:
    source = write_thebloke_q2_k(tmp_path / "mixtral-8x7b-instruct-v0.1.Q2_K.gguf")
    started = time.monotonic()
    target = merge_experts(source)
    seconds = time.monotonic() - started
    facts = inspect_model(target)
    gate = next(t for t in facts.tensors if t.name == "blk.31.ffn_gate_exps.weight")
    assert gate.shape == (N_EMBD, N_FF, N_EXPERT)
    assert sum(t.name.endswith("_exps.weight") for t in facts.tensors) == 3 * N_LAYERS
    assert facts.tensor_bytes == inspect_model(source).tensor_bytes
    assert target.stat().st_blocks * 512 < 64 << 20  # holes stayed holes
    print(f"converted {facts.tensor_bytes / 1e9:.2f} GB of sparse data in {seconds:.1f} s")
