"""Engine parts that need no engine process: options, formatting, context fitting, placement."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from mixtral_desk.core.engine import (
    ChatFormatter,
    ChatMessage,
    LoadOptions,
    SamplingOptions,
    TemplateError,
    cpu_moe_patterns,
    merge_system_prompt,
)
from mixtral_desk.core.engine.formatting import split_at_stop
from mixtral_desk.core.engine.history_fit import fit_messages, reply_reserve
from mixtral_desk.core.engine.logs import EngineLog
from mixtral_desk.core.engine.placement import TensorBuftOverride, TensorOverrides
from mixtral_desk.core.errors import ContextOverflowError
from mixtral_desk.core.gguf.synthetic import MIXTRAL_CHAT_TEMPLATE

SYSTEM = ChatMessage("system", "Be brief.")
U1, A1, U2 = ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"), ChatMessage("user",
                                                                                       "Why?")

# --- options -----------------------------------------------------------------------------------


def test_load_options_defaults_and_ranges(tmp_path: Path) -> None:
    options = LoadOptions(model_path=tmp_path / "m.gguf")
    assert (options.n_gpu_layers, options.n_cpu_moe, options.n_ctx) == (0, 0, 4096)
    assert options.kv_type == "f16" and options.seed == -1
    for bad in ({"n_gpu_layers": -2}, {"n_cpu_moe": -1}, {"n_ctx": 0}, {"n_threads": 0},
                {"seed": -5}, {"kv_type": "q5_1"}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            LoadOptions(model_path=tmp_path / "m.gguf", **bad)


def test_quantized_kv_cache_needs_flash_attention(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="flash_attn"):
        LoadOptions(model_path=tmp_path / "m.gguf", kv_type="q8_0")
    assert LoadOptions(model_path=tmp_path / "m.gguf", kv_type="q4_0", flash_attn=True)


def test_sampling_options_validate() -> None:
    assert SamplingOptions().max_tokens == 1024
    for bad in ({"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}, {"stop": [""]},
                {"min_p": 2}):
        with pytest.raises(ValidationError):
            SamplingOptions(**bad)


# --- formatting --------------------------------------------------------------------------------


def test_mixtral_template_formats_turns() -> None:
    formatter = ChatFormatter(MIXTRAL_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert formatter.source == "model" and formatter.starts_with_bos
    assert formatter.format([U1, A1, U2]) == "<s>[INST] Hi [/INST]Hello!</s>[INST] Why? [/INST]"


def test_a_trailing_assistant_message_is_continued_not_closed() -> None:
    formatter = ChatFormatter(MIXTRAL_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    partial = ChatMessage("assistant", "Because the sky")
    assert formatter.format([U1, A1, U2, partial]) == (
        "<s>[INST] Hi [/INST]Hello!</s>[INST] Why? [/INST]Because the sky")
    assert ChatFormatter(None).format([U1, partial]).endswith("### Assistant:\nBecause the sky")


def test_system_prompt_is_merged_when_the_template_has_no_system_role() -> None:
    formatter = ChatFormatter(MIXTRAL_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert not formatter.supports_system
    assert formatter.format([SYSTEM, U1, A1, U2]) == (
        "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Why? [/INST]")


def test_template_that_ignores_system_is_merged_too() -> None:
    silent = ("{% for m in messages %}{% if m.role != 'system' %}<{{ m.role }}>{{ m.content }}"
              "{% endif %}{% endfor %}<assistant>")
    formatter = ChatFormatter(silent)
    assert not formatter.supports_system
    assert formatter.format([SYSTEM, U1]) == "<user>Be brief.\n\nHi<assistant>"


def test_template_with_system_role_keeps_it() -> None:
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    formatter = ChatFormatter(chatml)
    assert formatter.supports_system
    assert formatter.format([SYSTEM, U1]).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_template_errors_are_reported() -> None:
    formatter = ChatFormatter(MIXTRAL_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>")
    with pytest.raises(TemplateError, match="alternate"):
        formatter.format([U1, U2])
    with pytest.raises(TemplateError):
        ChatFormatter("{% for %}")


def test_fallback_format() -> None:
    formatter = ChatFormatter(None)
    assert formatter.source == "fallback" and formatter.stop == ("### User:",)
    assert formatter.format([SYSTEM, U1]) == (
        "### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\n")


def test_merge_system_prompt_without_user_turn() -> None:
    assert merge_system_prompt([SYSTEM]) == [ChatMessage("user", "Be brief.")]


def test_split_at_stop_holds_back_prefixes() -> None:
    assert split_at_stop("Hello ##", ["### User:"]) == ("Hello ", "##", False)
    assert split_at_stop("Hello ### User: more", ["### User:"]) == ("Hello ", "", True)
    assert split_at_stop("abc", []) == ("abc", "", False)
    assert split_at_stop("xEN", ["END", "NO"]) == ("x", "EN", False)


# --- context fitting ---------------------------------------------------------------------------


def _count(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content) + 2 for m in messages)


def test_fit_keeps_everything_that_fits() -> None:
    assert fit_messages([SYSTEM, U1, A1, U2], _count, 100, 10) == ([SYSTEM, U1, A1, U2], 0)


def test_fit_drops_oldest_turns_keeps_system() -> None:
    turns = [SYSTEM]
    for i in range(10):
        turns += [ChatMessage("user", f"question {i}" * 3), ChatMessage("assistant", "answer" * 5)]
    turns.append(ChatMessage("user", "last"))
    kept, dropped = fit_messages(turns, _count, 200, 50)
    assert kept[0] == SYSTEM and kept[1].role == "user" and kept[-1].content == "last"
    assert dropped == len(turns) - len(kept) > 0
    assert _count(kept) <= 150
    # one more turn would not have fitted
    assert _count([SYSTEM, *turns[len(turns) - len(kept) - 1:]]) > 150


def test_fit_raises_when_the_last_message_alone_is_too_long() -> None:
    with pytest.raises(ContextOverflowError, match=r"needs \d+ tokens"):
        fit_messages([SYSTEM, U1, A1, ChatMessage("user", "x" * 500)], _count, 200, 50)


def test_reply_reserve() -> None:
    assert reply_reserve(100, 4096) == 100
    assert reply_reserve(None, 4096) == 1024
    assert reply_reserve(None, 512) == 256
    assert reply_reserve(10_000, 4096) == 2048


# --- placement and log -------------------------------------------------------------------------


def test_cpu_moe_patterns() -> None:
    import re

    patterns = cpu_moe_patterns(2)
    assert patterns == [r"blk\.0\.ffn_(gate_up|gate|up|down)(_exps|\.\d+)\.",
                        r"blk\.1\.ffn_(gate_up|gate|up|down)(_exps|\.\d+)\."]
    names = ["blk.0.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight", "blk.1.ffn_up.3.weight",
             "blk.1.ffn_gate_up_exps.weight", "blk.10.ffn_up_exps.weight",
             "blk.0.ffn_gate_inp.weight", "blk.0.attn_q.weight", "blk.0.ffn_up_shexp.weight",
             "blk.1.ffn_gate_inp_shexp.weight", "blk.1.ffn_down_shexp.weight"]
    matched = [n for n in names if any(re.search(p, n) for p in patterns)]
    assert matched == names[:4]  # shared experts and the router stay with the attention
    combined = cpu_moe_patterns(3, max_entries=2)
    assert len(combined) == 1 and re.search(combined[0], "blk.2.ffn_up_exps.weight")


def test_cpu_moe_patterns_split_the_boundary_layer_tensor_by_tensor() -> None:
    import re

    patterns = cpu_moe_patterns(2, partial=("down",))
    assert len(patterns) == 3 and patterns[2] == r"blk\.2\.ffn_(down)(_exps|\.\d+)\."
    names = ["blk.2.ffn_down_exps.weight", "blk.2.ffn_up_exps.weight",
             "blk.2.ffn_gate_exps.weight", "blk.2.ffn_down.7.weight", "blk.2.ffn_down_shexp.weight",
             "blk.3.ffn_down_exps.weight"]
    assert [n for n in names if re.search(patterns[2], n)] == [names[0], names[3]]
    gate_up = cpu_moe_patterns(0, partial=("gate_up",))
    assert [n for n in ("blk.0.ffn_gate_up_exps.weight", "blk.0.ffn_gate_exps.weight",
                        "blk.0.ffn_down_exps.weight") if re.search(gate_up[0], n)] == [
        "blk.0.ffn_gate_up_exps.weight"]
    # Many layers stay under the limit: the whole layers are combined, the split layer kept.
    limited = cpu_moe_patterns(5000, max_entries=4095, partial=("up", "gate"))
    assert len(limited) == 2 and re.search(limited[0], "blk.4999.ffn_gate_up_exps.weight")
    assert re.search(limited[1], "blk.5000.ffn_up_exps.weight")
    assert not re.search(limited[1], "blk.5000.ffn_down_exps.weight")
    assert len(cpu_moe_patterns(4094, max_entries=4095, partial=("down",))) == 4095
    with pytest.raises(ValueError, match="kinds"):
        cpu_moe_patterns(1, partial=("shexp",))


def test_tensor_overrides_array_is_null_terminated() -> None:
    overrides = TensorOverrides(cpu_moe_patterns(2), buft=0x1234)
    array = (TensorBuftOverride * 3).from_address(overrides.address)
    assert array[0].pattern == rb"blk\.0\.ffn_(gate_up|gate|up|down)(_exps|\.\d+)\."
    assert array[1].buft == 0x1234
    assert array[2].pattern is None and array[2].buft is None
    assert len(overrides) == 2
    assert ctypes.sizeof(TensorBuftOverride) == 2 * ctypes.sizeof(ctypes.c_void_p)


def test_engine_log_collects_lines_and_counts(tmp_path: Path) -> None:
    log = EngineLog(tmp_path / "engine.log")
    log.write(2, "load_tensors: offloaded 3/")
    log.write(5, "33 layers to GPU\n")
    log.write(1, "tensor blk.0.ffn_up_exps.weight (0 MiB f32) buffer type overridden to CPU\nx\n")
    log.close()
    assert log.offloaded_layers == 3 and log.overridden_tensors == 1
    text = (tmp_path / "engine.log").read_text()
    assert "INFO" in text and "offloaded 3/33 layers to GPU" in text and "DEBUG" in text
