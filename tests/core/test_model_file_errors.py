"""inspect_model on broken files and split models: one clear GGUFError each, never a crash."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from mixtral_desk.core.errors import GGUFError, ModelFileNotFoundError
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model, split_part_paths
from mixtral_desk.core.gguf.validation import LFS_POINTER_START


def error_of(path: Path | str) -> str:
    """Inspect ``path``, expecting a GGUFError; return its message (checked to name the file)."""
    with pytest.raises(GGUFError) as info:
        inspect_model(path)
    message = str(info.value)
    assert message.startswith(f"{info.value.path}: ")
    return message


def edited_copy(src: Path, dst: Path, edits: dict[int, bytes]) -> Path:
    """Copy ``src`` to ``dst`` with the bytes at the given offsets replaced."""
    data = bytearray(src.read_bytes())
    for offset, new in edits.items():
        data[offset:offset + len(new)] = new
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def layout(tiny_model: Path) -> dict[str, Any]:
    """Where things sit in the tiny model, found by the reference reader."""
    reader = gguf.GGUFReader(tiny_model)
    fields = {name: int(f.offset) for name, f in reader.fields.items()}
    tensors = [(t.name, int(t.field.offset), len(t.shape)) for t in reader.tensors]
    data_offset = int(reader.data_offset)
    del reader
    return {"fields": fields, "tensors": tensors, "data_offset": data_offset}


def tensor_info_offsets(layout: dict[str, Any], i: int) -> tuple[int, int]:
    """Byte offsets of tensor ``i``'s ggml type and data offset fields."""
    name, start, n_dims = layout["tensors"][i]
    type_at = start + 8 + len(name.encode()) + 4 + 8 * n_dims
    return type_at, type_at + 4


# --- not a GGUF file at all -------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is empty (0 bytes)"),
    (b"GGUF\x03\x00\x00\x00\x01", "is too short to be a GGUF model: 9 bytes"),
    (b"GG", "is too short to be a GGUF model: 2 bytes"),
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title>",
     "is a web page (HTML) saved instead of a model, likely a failed download"),
    (b"\n  <html lang=en><body>Error 404</body></html>", "is a web page (HTML)"),
    (LFS_POINTER_START + b".github.com/spec/v1\noid sha256:4a5b\nsize 26441533184\n",
     "is a Git LFS pointer"),
    (b'{"error":"Repository not found"}', "contains JSON text"),
    (b"tjgg\x03\x00\x00\x00" + bytes(64), "is an old GGML/GGJT model"),
    (b"PK\x03\x04" + bytes(64), "is a ZIP archive"),
    (b"\x00\x01\x02\x03" + bytes(64), "is not a GGUF file: it starts with bytes 00 01 02 03"),
])
def test_not_a_gguf_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    assert expected in error_of(path)


def test_missing_file_and_folder(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ModelFileNotFoundError):
        inspect_model(tmp_path / "nope.gguf")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert error_of(empty) == f"{empty}: is a folder, not a GGUF model file"
    full = tmp_path / "models"
    full.mkdir()
    shutil.copy(tiny_model, full / "a.gguf")
    assert "pick one of the files in it (a.gguf)" in error_of(full)


def test_unreadable_file(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.gguf"
    shutil.copy(tiny_model, path)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: simulate the refusal instead
        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(pathlib.Path, "open", refuse)
    assert error_of(path) == f"{path}: cannot be read: permission denied"


# --- broken headers ---------------------------------------------------------------------------

def test_unsupported_versions(tmp_path: Path, tiny_model: Path) -> None:
    v99 = edited_copy(tiny_model, tmp_path / "v99.gguf", {4: struct.pack("<I", 99)})
    assert "has unsupported GGUF version 99" in error_of(v99)
    v1 = edited_copy(tiny_model, tmp_path / "v1.gguf", {4: struct.pack("<I", 1)})
    assert "is GGUF version 1" in error_of(v1)
    big = edited_copy(tiny_model, tmp_path / "be.gguf", {4: struct.pack(">I", 3)})
    assert "big-endian" in error_of(big)


def test_absurd_counts(tmp_path: Path, tiny_model: Path) -> None:
    many_tensors = edited_copy(tiny_model, tmp_path / "t.gguf", {8: struct.pack("<Q", 10**6 + 1)})
    assert "claims 1,000,001 tensors (more than 1,000,000)" in error_of(many_tensors)
    many_kv = edited_copy(tiny_model, tmp_path / "kv.gguf", {16: struct.pack("<Q", 2**63)})
    assert "metadata entries (more than 100,000)" in error_of(many_kv)


def test_truncated_download(tmp_path: Path, tiny_model: Path, layout: dict[str, Any]) -> None:
    data = tiny_model.read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[:500_000])
    message = error_of(half)
    assert message == (f"{half}: truncated: 500.0 KB of 1.0 MB present ({len(data) - 500_000:,} "
                       f"bytes missing); the download is incomplete")
    one_short = tmp_path / "one-short.gguf"
    one_short.write_bytes(data[:-1])
    assert "(1 bytes missing)" in error_of(one_short)
    in_header = tmp_path / "header.gguf"
    in_header.write_bytes(data[:layout["fields"]["tokenizer.ggml.tokens"] + 100])
    assert ("truncated: the file ends inside its header (while reading metadata key "
            "'tokenizer.ggml.tokens')") in error_of(in_header)


def test_missing_architecture(tmp_path: Path, tiny_model: Path, layout: dict[str, Any]) -> None:
    at = layout["fields"]["general.architecture"] + 8
    path = edited_copy(tiny_model, tmp_path / "noarch.gguf", {at: b"general.architecturX"})
    assert "has no general.architecture key" in error_of(path)


def test_duplicate_key(tmp_path: Path, tiny_model: Path, layout: dict[str, Any]) -> None:
    at = layout["fields"]["llama.context_length"] + 8  # same length as general.architecture
    path = edited_copy(tiny_model, tmp_path / "dup.gguf", {at: b"general.architecture"})
    assert "metadata key 'general.architecture' appears twice" in error_of(path)


def test_garbage_lengths_and_types(tmp_path: Path, tiny_model: Path,
                                   layout: dict[str, Any]) -> None:
    key_at = layout["fields"]["general.architecture"]
    long_key = edited_copy(tiny_model, tmp_path / "a.gguf", {key_at: struct.pack("<Q", 2**40)})
    assert "metadata entry 1 of" in error_of(long_key) and "claims a string of" in error_of(
        long_key)
    type_at = key_at + 8 + len(b"general.architecture")
    bad_type = edited_copy(tiny_model, tmp_path / "b.gguf", {type_at: struct.pack("<I", 77)})
    assert "metadata key 'general.architecture' has unknown value type 77" in error_of(bad_type)


def test_corrupt_tensor_table(tmp_path: Path, tiny_model: Path, layout: dict[str, Any]) -> None:
    type_at, offset_at = tensor_info_offsets(layout, 3)
    name = layout["tensors"][3][0]
    bad_type = edited_copy(tiny_model, tmp_path / "type.gguf", {type_at: struct.pack("<I", 99)})
    assert f"tensor '{name}' has unknown ggml type 99" in error_of(bad_type)
    moved = edited_copy(tiny_model, tmp_path / "off.gguf", {offset_at: struct.pack("<Q", 64)})
    assert f"tensor '{name}' has data offset 64 where" in error_of(moved)
    beyond = edited_copy(tiny_model, tmp_path / "far.gguf", {offset_at: struct.pack("<Q", 2**62)})
    assert "corrupt tensor table" in error_of(beyond)


def test_random_corruption_never_escapes_as_another_error(
        tmp_path: Path, tiny_model: Path, layout: dict[str, Any]) -> None:
    """Flip bytes in the header, and cut the file anywhere: the result is facts or GGUFError."""
    data = tiny_model.read_bytes()
    header = layout["data_offset"]
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    outcomes = {"facts": 0, "error": 0}
    for _ in range(300):
        broken = bytearray(data[:header + 4096])
        for _ in range(rng.randint(1, 4)):
            broken[rng.randrange(header)] = rng.randrange(256)
        path.write_bytes(bytes(broken) + data[header + 4096:])
        try:
            outcome: ModelFacts | GGUFError = inspect_model(path)
        except GGUFError as error:
            outcome = error
        outcomes["error" if isinstance(outcome, GGUFError) else "facts"] += 1
    assert outcomes["error"] > 50
    for cut in [*range(0, header + 64, 97), len(data) // 2]:
        path.write_bytes(data[:cut])
        assert "truncated" in error_of(path) or cut < 24


def test_not_a_model(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "lora.gguf"), "llama")
    writer.add_type("adapter")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert "is a LoRA adapter, not a model" in error_of(tmp_path / "lora.gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    writer.add_token_list(["<unk>", "a"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert "contains no tensors" in error_of(tmp_path / "vocab.gguf")


# --- split models -----------------------------------------------------------------------------

def write_split(path: Path, n_tensors: int, per_part: int) -> list[Path]:
    """Write a split model the way llama.cpp's converter does; return its part paths."""
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=per_part)
    writer.add_name("split-model")
    writer.add_block_count(n_tensors)
    for i in range(n_tensors):
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.full((4, 32), i, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    count = -(-n_tensors // per_part)
    return [path.with_name(f"{path.stem}-{i:05d}-of-{count:05d}.gguf")
            for i in range(1, count + 1)]


@pytest.fixture
def split3(tmp_path: Path) -> list[Path]:
    parts = write_split(tmp_path / "m.gguf", 9, 3)
    assert all(p.is_file() for p in parts) and len(parts) == 3
    return parts


def test_split_model_facts(split3: list[Path]) -> None:
    facts = inspect_model(split3[0])
    assert facts.parts == tuple(split3) and facts.split_count == 3 and facts.path == split3[0]
    assert facts.file_size == sum(p.stat().st_size for p in split3)
    assert [t.part for t in facts.tensors] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert facts.n_params == 9 * 4 * 32 and facts.name == "split-model"
    for i, part in enumerate(split3):
        reader = gguf.GGUFReader(part)
        assert [(t.name, int(t.data_offset)) for t in reader.tensors] == [
            (t.name, t.offset) for t in facts.tensors if t.part == i]
        del reader
    assert inspect_model(split3[1]) == facts  # a later part: inspected from part 1
    assert split_part_paths(split3[2]) == tuple(split3)


def test_split_part_missing(split3: list[Path]) -> None:
    split3[1].unlink()
    assert error_of(split3[0]) == (f"{split3[0]}: part 2 of 3 is missing: m-00002-of-00003.gguf "
                                   f"(expected next to this file)")
    split3[0].unlink()
    assert "part 1 of 3 is missing: m-00001-of-00003.gguf" in error_of(split3[2])
    assert "1 more parts are missing too" in error_of(split3[2])


def test_split_part_renamed_or_mixed(split3: list[Path], tmp_path: Path) -> None:
    renamed = tmp_path / "m.gguf"
    shutil.copy(split3[0], renamed)
    assert "is part 1 of 3 of a split model, but its name" in error_of(renamed)
    shutil.copy(split3[2], split3[1])
    message = error_of(split3[0])
    assert message.startswith(f"{split3[1]}: is named as part 2 of 3 but its header says part 3 "
                              f"of 3")


def test_split_part_from_another_download(split3: list[Path], tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = write_split(tmp_path / "other" / "m.gguf", 6, 2)
    shutil.copy(other[1], split3[1])  # also part 2 of 3, but with 2 tensors instead of 3
    assert "the 3 parts hold 8 tensors but part 1 says the model has 9" in error_of(split3[0])


def test_split_part_truncated(split3: list[Path]) -> None:
    data = split3[2].read_bytes()
    split3[2].write_bytes(data[:-100])
    message = error_of(split3[0])
    assert message.startswith(f"{split3[2]}: truncated:")


@pytest.mark.parametrize("name", ["mixtral.Q8_0.gguf.part1of2", "mixtral.Q8_0.gguf.part2of2",
                                  "mixtral.Q8_0.gguf-split-a"])
def test_pieces_must_be_joined(tmp_path: Path, tiny_model: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(tiny_model.read_bytes()[:1000])
    assert "join the pieces into one .gguf file first" in error_of(path)


def test_impossible_split_name(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "m-00004-of-00003.gguf"
    shutil.copy(tiny_model, path)
    assert "its name says part 4 of 3" in error_of(path)
