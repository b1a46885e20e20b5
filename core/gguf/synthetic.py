"""Write small Mixtral-shaped GGUF models with random weights.

These files are real GGUF models that llama.cpp loads and generates from (the text is
meaningless). They serve the self-test, the tests and the benchmarks: a mixture-of-experts model in
the ``llama`` architecture with a SentencePiece byte-fallback vocabulary, so any UTF-8 text
tokenizes, and optionally Mistral's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# Mixtral-8x7B-Instruct's template (abridged to what matters: no system role, [INST] turns).
MIXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

_WORDS = ("▁the", "▁a", "▁and", "▁of", "▁to", "▁in", "▁is", "▁model", "▁hello", "▁world")


@dataclass(frozen=True)
class SyntheticShape:
    """The dimensions of a generated model."""

    n_layers: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_expert: int = 4
    n_expert_used: int = 2
    n_ctx_train: int = 4096
    extra_vocab: int = 0  # filler tokens beyond the byte vocabulary (a 32000-token vocab: 31731)
    quantization: str = "F32"  # F32, F16 or Q8_0


TINY = SyntheticShape()
# The benchmark model of the issues: about 0.7 GB, Mixtral-shaped (8 experts, 2 used).
BENCH = SyntheticShape(n_layers=8, n_embd=1024, n_head=16, n_head_kv=4, n_ff=2816, n_expert=8,
                       n_expert_used=2, n_ctx_train=32768, extra_vocab=32000 - 269,
                       quantization="Q8_0")


def _vocabulary(extra: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += list(_WORDS)
    types += [gguf.TokenType.NORMAL] * len(_WORDS)
    tokens += [f"▁w{i}" for i in range(extra)]
    types += [gguf.TokenType.NORMAL] * extra
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens, scores, [int(t) for t in types]


def write_synthetic_model(
    path: Path | str,
    shape: SyntheticShape = TINY,
    *,
    chat_template: str | None = MIXTRAL_CHAT_TEMPLATE,
    name: str = "synthetic-mixtral",
    seed: int = 0,
    per_expert: bool = False,
) -> Path:
    """Write a random-weight Mixtral-shaped GGUF file to ``path`` and return the path.

    ``per_expert``: store each expert as its own tensor (``blk.N.ffn_gate.E.weight``), as Mixtral
    files converted before April 2024 did; the weights are the same as without it.

    Raises:
        OSError: the file cannot be written.
        ValueError: ``shape.quantization`` is not F32, F16 or Q8_0.
    """
    qtypes = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
              "Q8_0": gguf.GGMLQuantizationType.Q8_0}
    if shape.quantization not in qtypes:
        raise ValueError(f"unsupported quantization {shape.quantization!r}")
    qtype = qtypes[shape.quantization]
    file_types = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                  "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    rng = np.random.default_rng(seed)
    path = Path(path)
    head_dim = shape.n_embd // shape.n_head
    tokens, scores, types = _vocabulary(shape.extra_vocab)
    vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(1e6)
    writer.add_expert_count(shape.n_expert)
    writer.add_expert_used_count(shape.n_expert_used)
    writer.add_file_type(file_types[shape.quantization])
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def add(name: str, data: np.ndarray, quantize: bool) -> None:
        if quantize and qtype == gguf.GGMLQuantizationType.Q8_0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        elif quantize and qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, data)

    def weight(name: str, *dims: int, scale: float = 0.02, quantize: bool = True) -> None:
        data = (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float32)
        if per_expert and name.endswith("_exps.weight"):
            # The Dec-2023 layout: blk.N.ffn_gate.E.weight for each expert E.
            for x in range(dims[0]):
                add(name.replace("_exps.weight", f".{x}.weight"), data[x], quantize)
        else:
            add(name, data, quantize)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(shape.n_embd, dtype=np.float32))

    e, kv = shape.n_embd, shape.n_head_kv * head_dim
    weight("token_embd.weight", vocab, e, scale=1.0)
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight")
        weight(p + "attn_q.weight", e, e)
        weight(p + "attn_k.weight", kv, e)
        weight(p + "attn_v.weight", kv, e)
        weight(p + "attn_output.weight", e, e)
        norm(p + "ffn_norm.weight")
        weight(p + "ffn_gate_inp.weight", shape.n_expert, e, quantize=False)
        weight(p + "ffn_gate_exps.weight", shape.n_expert, shape.n_ff, e)
        weight(p + "ffn_up_exps.weight", shape.n_expert, shape.n_ff, e)
        weight(p + "ffn_down_exps.weight", shape.n_expert, e, shape.n_ff)
    norm("output_norm.weight")
    weight("output.weight", vocab, e, scale=0.5)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
