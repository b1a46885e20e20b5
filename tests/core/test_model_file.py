"""inspect_model on real generated GGUF files: facts, sizes, expert split, speed, JSON."""

from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import pytest

from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model, is_expert_tensor, layer_of
from mixtral_desk.core.gguf.synthetic import TINY, SyntheticShape, write_synthetic_model
from tests.mixtral_header import TensorSpec, n_bytes, write_header_model

Q = gguf.GGMLQuantizationType


def write_zero_model(path: Path, tensors: Sequence[TensorSpec], kv: dict[str, Any] | None = None,
                     *, arch: str = "llama", vocab: int = 0) -> Path:
    """Write a GGUF whose tensor data is all zeros, as a sparse file (no data is written)."""
    return write_header_model(path, tensors, kv or {}, arch=arch, vocab=vocab)


# --- the generated Mixtral-shaped models ------------------------------------------------------

def tiny_n_params(s: SyntheticShape, vocab: int) -> int:
    kv = s.n_head_kv * (s.n_embd // s.n_head)
    layer = (2 * s.n_embd + 2 * s.n_embd * s.n_embd + 2 * kv * s.n_embd
             + s.n_expert * s.n_embd + 3 * s.n_expert * s.n_ff * s.n_embd)
    return 2 * vocab * s.n_embd + s.n_embd + s.n_layers * layer


def test_tiny_model_facts_match_its_shape(tiny_model: Path) -> None:
    facts = inspect_model(tiny_model)
    assert facts.path == tiny_model and facts.parts == (tiny_model,) and facts.split_count == 1
    assert facts.file_size == tiny_model.stat().st_size
    assert (facts.gguf_version, facts.architecture, facts.name) == (3, "llama", "synthetic-mixtral")
    assert (facts.n_layers, facts.n_embd, facts.n_head, facts.n_head_kv, facts.n_ff) == (
        2, 64, 4, 2, 128)
    assert (facts.expert_count, facts.expert_used_count, facts.is_moe) == (4, 2, True)
    assert facts.context_length == 4096
    assert facts.vocab_size == 269 and (facts.bos_token, facts.eos_token) == ("<s>", "</s>")
    assert facts.quantization == "F32"
    assert facts.n_params == tiny_n_params(TINY, 269) == 256_448
    assert facts.chat_template is not None and "[INST]" in facts.chat_template
    assert len(facts.tensors) == 3 + 10 * TINY.n_layers
    assert facts.tensor_bytes == 4 * facts.n_params
    assert facts.bits_per_weight == 32.0


def test_tiny_model_expert_bytes(tiny_model: Path) -> None:
    facts = inspect_model(tiny_model)
    e, x, f = TINY.n_embd, TINY.n_expert, TINY.n_ff
    expert = 3 * x * f * e * 4
    assert facts.layer_bytes(0) == facts.layer_bytes(1)
    dense, experts = facts.layer_bytes(1)
    assert experts == expert
    assert dense == (2 * e + 2 * e * e + 2 * 32 * e + x * e) * 4  # norms, attention, router
    assert facts.layer_bytes(2) == (0, 0)
    assert facts.expert_bytes_total == TINY.n_layers * expert
    assert facts.active_params == facts.n_params - facts.expert_params // 2 == 158_144


def test_tensor_table_matches_gguf_reader(tiny_model: Path) -> None:
    reader = gguf.GGUFReader(tiny_model)  # the reference implementation, as an oracle
    expected = [(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes),
                 int(t.data_offset)) for t in reader.tensors]
    facts = inspect_model(tiny_model)
    assert [(t.name, t.shape, t.ggml_type, t.n_bytes, t.offset) for t in facts.tensors] == expected
    assert all(t.part == 0 for t in facts.tensors)
    assert facts.n_params == sum(int(t.n_elements) for t in reader.tensors)
    del reader


def test_q8_0_model(models_dir: Path) -> None:
    path = write_synthetic_model(models_dir / "tiny-q8.gguf", SyntheticShape(quantization="Q8_0"))
    facts = inspect_model(path)
    assert facts.quantization == "Q8_0"
    by_type = facts.bytes_by_ggml_type()
    assert set(by_type) == {"Q8_0", "F32"}
    q8 = [t for t in facts.tensors if t.ggml_type == "Q8_0"]
    assert {t.name for t in q8} >= {"token_embd.weight", "blk.0.ffn_up_exps.weight"}
    assert by_type["Q8_0"] == sum(t.n_elements for t in q8) // 32 * 34
    assert facts.n_params == tiny_n_params(TINY, 269)
    assert 8 < facts.bits_per_weight < 10
    assert facts.layer_bytes(0)[1] == 3 * 4 * 128 * 64 // 32 * 34
    reader = gguf.GGUFReader(path)
    assert [int(t.data_offset) for t in reader.tensors] == [t.offset for t in facts.tensors]
    del reader


def test_model_without_template(tiny_model_no_template: Path) -> None:
    facts = inspect_model(tiny_model_no_template)
    assert facts.chat_template is None
    assert facts.to_json_dict()["chat_template"] is None
    assert any("none" in line for line in facts.summary_lines() if "template" in line)


def test_per_expert_tensors_count_as_experts(tmp_path: Path) -> None:
    """TheBloke's Dec-2023 Mixtral files: one tensor per expert, blk.N.ffn_gate.E.weight."""
    e, f, x = 256, 512, 4
    tensors: list[TensorSpec] = [("token_embd.weight", (100, e), Q.Q8_0)]
    for i in range(2):
        tensors += [(f"blk.{i}.attn_q.weight", (e, e), Q.Q4_K),
                    (f"blk.{i}.attn_norm.weight", (e,), Q.F32),
                    (f"blk.{i}.ffn_gate_inp.weight", (x, e), Q.F16)]
        for j in range(x):
            tensors += [(f"blk.{i}.ffn_gate.{j}.weight", (f, e), Q.Q4_K),
                        (f"blk.{i}.ffn_up.{j}.weight", (f, e), Q.Q4_K),
                        (f"blk.{i}.ffn_down.{j}.weight", (e, f), Q.Q6_K)]
    kv = {"general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_K_M), "llama.block_count": 2,
          "llama.expert_count": x, "llama.expert_used_count": 2}
    facts = inspect_model(write_zero_model(tmp_path / "thebloke.gguf", tensors, kv))
    assert facts.quantization == "Q4_K_M"
    dense = n_bytes((e, e), Q.Q4_K) + e * 4 + x * e * 2
    expert = x * (2 * n_bytes((f, e), Q.Q4_K) + n_bytes((e, f), Q.Q6_K))
    assert facts.layer_bytes(0) == facts.layer_bytes(1) == (dense, expert)
    assert facts.expert_bytes_total == 2 * expert
    assert facts.active_params == facts.n_params - facts.expert_params // 2
    assert list(facts.bytes_by_ggml_type()) == ["Q4_K", "Q6_K", "Q8_0", "F16", "F32"]


def test_dense_model_has_no_expert_bytes(tmp_path: Path) -> None:
    e = 256
    tensors: list[TensorSpec] = [("token_embd.weight", (100, e), Q.F16)]
    tensors += [(f"blk.0.{n}.weight", (e, e), Q.Q8_0) for n in ("attn_q", "ffn_up", "ffn_gate")]
    facts = inspect_model(write_zero_model(tmp_path / "dense.gguf", tensors,
                                           {"llama.block_count": 1}, vocab=100))
    assert (facts.is_moe, facts.expert_count, facts.expert_used_count) == (False, 0, 0)
    assert facts.expert_bytes_total == 0
    assert facts.layer_bytes(0) == (3 * n_bytes((e, e), Q.Q8_0), 0)
    assert facts.active_params == facts.n_params
    assert facts.quantization == "Q8_0"  # no general.file_type: the type holding most bytes
    assert facts.vocab_size == 100 and facts.context_length == 0
    assert facts.n_head_kv == facts.n_head == 0


@pytest.mark.parametrize(("name", "expert", "layer"), [
    ("blk.3.ffn_gate_exps.weight", True, 3), ("blk.31.ffn_down_exps.weight", True, 31),
    ("blk.0.ffn_up.7.weight", True, 0), ("blk.2.ffn_gate_up_exps.weight", True, 2),
    ("blk.0.ffn_gate_inp.weight", False, 0), ("blk.0.ffn_gate_shexp.weight", False, 0),
    ("blk.0.ffn_up.weight", False, 0), ("output.weight", False, None),
    ("token_embd.weight", False, None),
])
def test_expert_tensor_names(name: str, expert: bool, layer: int | None) -> None:
    assert is_expert_tensor(name) is expert
    assert layer_of(name) == layer


def test_json_and_summary(tiny_model: Path) -> None:
    facts = inspect_model(tiny_model)
    plain = json.loads(json.dumps(facts.to_json_dict()))
    assert "tensors" not in plain
    assert plain["n_params"] == facts.n_params and plain["expert_count"] == 4
    assert plain["chat_template"] == facts.chat_template
    assert plain["path"] == str(tiny_model)
    full = json.loads(json.dumps(facts.to_json_dict(include_tensors=True)))
    assert len(full["tensors"]) == len(facts.tensors)
    assert full["tensors"][0] == {"name": "token_embd.weight", "shape": [64, 269],
                                  "ggml_type": "F32", "n_bytes": 269 * 64 * 4,
                                  "offset": facts.tensors[0].offset, "part": 0}
    text = "\n".join(facts.summary_lines())
    for expected in ("1.0 MB", "llama", "256.4K", "F32", "4,096", "4, 2 used per token",
                     "269 tokens", "Chat template: yes"):
        assert expected in text


# --- a Mixtral-8x7B-sized file (26 GB, sparse) ------------------------------------------------

def mixtral_8x7b_tensors() -> list[TensorSpec]:
    e, f, x, kv, v = 4096, 14336, 8, 1024, 32000
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q4_K)]
    for i in range(32):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (e,), Q.F32),
                    (p + "attn_q.weight", (e, e), Q.Q4_K), (p + "attn_k.weight", (kv, e), Q.Q4_K),
                    (p + "attn_v.weight", (kv, e), Q.Q6_K),
                    (p + "attn_output.weight", (e, e), Q.Q4_K),
                    (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "ffn_gate_inp.weight", (x, e), Q.F32),
                    (p + "ffn_gate_exps.weight", (x, f, e), Q.Q4_K),
                    (p + "ffn_up_exps.weight", (x, f, e), Q.Q4_K),
                    (p + "ffn_down_exps.weight", (x, e, f), Q.Q4_K)]
    return [*tensors, ("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q6_K)]


MIXTRAL_KV: dict[str, Any] = {
    "general.name": "Mixtral-8x7B-Instruct-v0.1", "llama.context_length": 32768,
    "llama.embedding_length": 4096, "llama.block_count": 32, "llama.feed_forward_length": 14336,
    "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8,
    "llama.expert_count": 8, "llama.expert_used_count": 2,
    "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
}


@pytest.fixture(scope="module")
def mixtral_sized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if sys.platform == "win32":
        pytest.skip("needs sparse files")
    path = tmp_path_factory.mktemp("big") / "mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf"
    write_zero_model(path, mixtral_8x7b_tensors(), MIXTRAL_KV, vocab=32000)
    if path.stat().st_blocks * 512 > 100_000_000:  # pragma: no cover - not a sparse filesystem
        path.unlink()
        pytest.skip("this filesystem does not support sparse files")
    return path


class CountingFile(io.BufferedReader):
    total_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        CountingFile.total_read += len(data)
        return data


def test_mixtral_sized_file_inspects_fast_without_reading_data(
        mixtral_sized: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = pathlib.Path.open

    def counting_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "rb":
            return CountingFile(io.FileIO(self, "rb"))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", counting_open)
    CountingFile.total_read = 0
    start = time.perf_counter()
    facts = inspect_model(mixtral_sized)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"inspecting took {elapsed:.2f} s"
    header_size = facts.tensors[0].offset
    assert header_size < CountingFile.total_read <= max(2 * header_size, 1 << 20) + 4096
    assert facts.file_size > 26e9 and "26.3 GB" in facts.summary_lines()[0]
    assert facts.n_params == 46_702_792_704  # Mixtral-8x7B: 46.7B
    assert facts.active_params == 12_879_925_248  # 12.9B per token
    assert facts.quantization == "Q4_K_M" and 4.5 < facts.bits_per_weight < 4.55
    assert (facts.vocab_size, facts.n_layers, facts.expert_count) == (32000, 32, 8)
    assert facts.expert_bytes_total / facts.tensor_bytes > 0.9


def test_truncated_mixtral_says_how_much_is_missing(mixtral_sized: Path, tmp_path: Path) -> None:
    from mixtral_desk.core.errors import GGUFError

    part = tmp_path / "partial.gguf"
    with mixtral_sized.open("rb") as src, part.open("wb") as dst:
        dst.write(src.read(1 << 20))
    os.truncate(part, 1_200_000_000)
    with pytest.raises(GGUFError) as info:
        inspect_model(part)
    needed = inspect_model(mixtral_sized).file_size
    assert str(info.value) == (f"{part}: truncated: 1.2 GB of 26.3 GB present "
                               f"({needed - 1_200_000_000:,} bytes missing); the download is "
                               f"incomplete")


def test_facts_are_frozen(tiny_model: Path) -> None:
    facts: ModelFacts = inspect_model(tiny_model)
    with pytest.raises(AttributeError):
        facts.n_layers = 3  # type: ignore[misc]
    assert hash(facts.tensors[0]) == hash(facts.tensors[0])
