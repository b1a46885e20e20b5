"""The curated catalog: the shipped models.toml, validation errors, lookups and the fit hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixtral_desk.core.catalog import (
    Catalog,
    CatalogEntry,
    fit_hint,
    load_catalog,
)
from mixtral_desk.core.errors import CatalogError, NotFoundError
from mixtral_desk.core.hardware import GPU, Hardware
from mixtral_desk.core.units import GiB

MIXTRAL_QUANTS = ["Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]

GOOD_ENTRY = """
[[models]]
id = "tiny-moe-q8_0"
name = "Tiny MoE (Q8_0)"
family = "tiny-moe"
repo_id = "example/Tiny-MoE-GGUF"
files = ["tiny-moe.Q8_0.gguf"]
quant = "Q8_0"
size_bytes = 1_000_000
memory_bytes = 2_000_000
default_context = 512
trained_context = 2048
license = "Apache-2.0"
architecture = "llama"
parameters = 1_000_000
layers = 2
expert_count = 4
expert_used_count = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def entry_dict(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": "tiny", "name": "Tiny", "family": "tiny", "repo_id": "a/b",
        "files": ["tiny.gguf"], "quant": "Q8_0", "size_bytes": 10, "memory_bytes": 20,
        "default_context": 512, "trained_context": 512, "license": "MIT",
        "architecture": "llama", "parameters": 100, "layers": 1,
    }
    data.update(changes)
    return data


# --- the shipped catalog -----------------------------------------------------------------------

def test_shipped_catalog_loads() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 9
    assert catalog.source.endswith("models.toml")
    for entry in catalog:
        assert entry.license
        assert entry.sources, f"{entry.id} names no source"
        for source in entry.sources:  # the catalog ships: public sources only, no local paths
            assert not source.startswith(("/", "~", ".")) and "/work/" not in source, source


def test_required_mixtral_quants_present_and_sizes_ascend() -> None:
    catalog = load_catalog()
    entries = [catalog.get(f"mixtral-8x7b-instruct-{quant.lower()}") for quant in MIXTRAL_QUANTS]
    for quant, entry in zip(MIXTRAL_QUANTS, entries, strict=True):
        assert entry.quant == quant
        # a conversion with merged experts: TheBloke's Dec-2023 files no longer load
        assert entry.repo_id == "mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF"
        assert entry.files == (f"Mixtral-8x7B-Instruct-v0.1.{quant}.gguf",)
        assert (entry.architecture, entry.layers, entry.license) == ("llama", 32, "Apache-2.0")
        assert (entry.expert_count, entry.expert_used_count) == (8, 2)
        assert entry.trained_context == 32768
        assert entry.expert_tensors == "merged"
        assert entry.memory_bytes > entry.total_size
    sizes = [entry.total_size for entry in entries]
    assert sizes == sorted(set(sizes))


def test_shipped_catalog_has_laptop_models_and_a_small_moe() -> None:
    catalog = load_catalog()
    small = [entry for entry in catalog if entry.memory_bytes <= 8 * 10**9]
    assert any(entry.is_moe for entry in small)
    mistral = catalog.get("mistral-7b-instruct-v0.2-q4_k_m")
    assert mistral.sha256_for(mistral.files[0]) is not None
    assert mistral.is_verified("size_bytes") and mistral.is_verified("sha256")


def test_unverified_sizes_never_carry_a_sha256() -> None:
    for entry in load_catalog():
        if not entry.is_verified("size_bytes"):
            assert entry.sha256 is None, entry.id


def test_load_catalog_from_path(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, "schema_version = 1\n" + GOOD_ENTRY))
    assert catalog.ids == ["tiny-moe-q8_0"]
    assert catalog.source == str(tmp_path / "models.toml")


# --- a bad models.toml names the file, the entry and the field ---------------------------------

@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("size_bytes = 1_000_000", "size_bytes = -5", "size_bytes", "greater than 0"),
    ('quant = "Q8_0"', 'quant = "Q8_0"\nsha256 = "abc123"', "sha256", "64 lower-case hex"),
    ('files = ["tiny-moe.Q8_0.gguf"]', 'files = ["tiny-moe.Q8_0.bin"]', "files", ".gguf"),
    ("expert_used_count = 2", "expert_used_count = 9", "expert_used_count", "expert_count"),
    ('repo_id = "example/Tiny-MoE-GGUF"', 'repo_id = "no-owner"', "repo_id", "owner/name"),
    ("size_bytes = 1_000_000\n", "", "size_bytes", "Field required"),
    ("layers = 2", "layers = 2\nsize_gb = 3", "size_gb", "Extra inputs"),
    ('id = "tiny-moe-q8_0"', 'id = "tiny-moe-q8_0"\nunverified = ["colour"]', "unverified",
     "colour"),
])
def test_bad_entry_names_file_entry_and_field(
    tmp_path: Path, old: str, new: str, field: str, words: str,
) -> None:
    assert old in GOOD_ENTRY
    path = write(tmp_path, GOOD_ENTRY.replace(old, new))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: entry 'tiny-moe-q8_0': {field}: "), message
    assert words in message


def test_duplicate_id_names_both_entries(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ENTRY + GOOD_ENTRY)
    with pytest.raises(CatalogError, match=r"entry 'tiny-moe-q8_0': id: duplicate id.*#1"):
        load_catalog(path)


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ENTRY.replace("layers = 2", "layers = = 2"))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 16" in message  # GOOD_ENTRY starts with a blank line and "column" in message


def test_entry_without_id_is_named_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ENTRY + GOOD_ENTRY.replace('id = "tiny-moe-q8_0"\n', ""))
    with pytest.raises(CatalogError, match=r"entry #2: id: Field required"):
        load_catalog(path)


@pytest.mark.parametrize(("text", "words"), [
    ("schema_version = 99\n" + GOOD_ENTRY, "newer"),
    ("schema_version = 1\n", "models"),
    ("colour = 'red'\n" + GOOD_ENTRY, "colour"),
])
def test_bad_document_structure(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(CatalogError, match=words):
        load_catalog(write(tmp_path, text))


def test_unreadable_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.toml")


# --- entry validation details ------------------------------------------------------------------

def test_split_files_must_be_consistent() -> None:
    parts = [f"big-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    entry = CatalogEntry.model_validate(entry_dict(files=parts, sha256=["a" * 64] * 3))
    assert entry.is_split and entry.sha256_for(parts[1]) == "a" * 64
    other = "other-00003-of-00003.gguf"
    shuffled = [parts[0], parts[2], parts[1]]
    for bad in (parts[:2], shuffled, [*parts[:2], other], ["a.gguf", "b.gguf"]):
        with pytest.raises(ValueError, match="split"):
            CatalogEntry.model_validate(entry_dict(files=bad))
    with pytest.raises(ValueError, match="3 files"):
        CatalogEntry.model_validate(entry_dict(files=parts, sha256="a" * 64))


@pytest.mark.parametrize("bad_id", ["Mixtral", "a b", "-lead", "x--y", ""])
def test_ids_are_slugs(bad_id: str) -> None:
    with pytest.raises(ValueError):
        CatalogEntry.model_validate(entry_dict(id=bad_id))


def test_catalog_rejects_duplicate_ids_when_built_directly() -> None:
    entry = CatalogEntry.model_validate(entry_dict())
    with pytest.raises(ValueError, match="duplicate"):
        Catalog(entries=(entry, entry))


def test_get_unknown_id_suggests_close_matches() -> None:
    catalog = load_catalog()
    with pytest.raises(NotFoundError) as caught:
        catalog.get("mixtral-8x7b-instruct-q4_k_l")
    message = str(caught.value)
    assert "'mixtral-8x7b-instruct-q4_k_l'" in message
    assert "Did you mean" in message and "mixtral-8x7b-instruct-q4_k_m" in message
    assert isinstance(caught.value, KeyError)
    with pytest.raises(NotFoundError, match=r"catalog\.$"):
        catalog.get("zzzz")


def test_local_paths_and_is_downloaded(tmp_path: Path) -> None:
    entry = CatalogEntry.model_validate(entry_dict(size_bytes=4))
    [path] = entry.local_paths(tmp_path)
    assert path == tmp_path / "tiny" / "tiny.gguf"
    assert not entry.is_downloaded(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b"ab")
    assert not entry.is_downloaded(tmp_path)  # size verified and short: incomplete
    path.write_bytes(b"abcd")
    assert entry.is_downloaded(tmp_path)
    estimate = CatalogEntry.model_validate(entry_dict(size_bytes=99, unverified=["size_bytes"]))
    assert estimate.is_downloaded(tmp_path)


# --- fit hint ----------------------------------------------------------------------------------

def machine(ram: float, available: float, gpus: tuple[GPU, ...] = ()) -> Hardware:
    return Hardware(
        ram_total=int(ram * GiB), ram_available=int(available * GiB), cpu_physical_cores=8,
        cpu_logical_cores=16, cpu_name="Test CPU", os_name="Linux", os_platform="Linux",
        machine="x86_64", gpus=gpus,
    )


def nvidia(total: float, free: float | None = None) -> GPU:
    return GPU(name="RTX Test", vendor="nvidia", total_bytes=int(total * GiB),
               free_bytes=None if free is None else int(free * GiB))


@pytest.mark.parametrize(("hardware", "verdict", "plan"), [
    (machine(64, 60, (nvidia(80, 79),)), "fits-gpu", "gpu"),
    (machine(64, 60, (nvidia(24, 23),)), "fits-gpu", "gpu+cpu-experts"),
    (machine(32, 20, (nvidia(24, 23),)), "fits-gpu", "gpu+cpu-experts"),
    (machine(40, 36), "fits-ram", "cpu"),
    (machine(32, 20), "tight", "cpu"),  # only after closing other programs
    # attention first: all layers on the 8 GB GPU, most experts in RAM
    (machine(32, 20, (nvidia(8, 7),)), "tight", "gpu+cpu-experts"),
    (machine(16, 14, (nvidia(8, 7),)), "too-large", "too-large"),
    (machine(16, 14), "too-large", "too-large"),
    (machine(64, 50, (GPU("Apple M3 Max", "apple", int(48 * GiB), None, True),)), "fits-gpu",
     "gpu"),
])
def test_fit_hint_comes_from_the_planner(hardware: Hardware, verdict: str, plan: str) -> None:
    entry = load_catalog().get("mixtral-8x7b-instruct-q4_k_m")  # ~26.5 GiB
    hint = fit_hint(entry, hardware)
    assert hint.verdict == verdict
    assert "\n" not in hint.reason
    if plan == "too-large":
        assert hint.reason.startswith("does not fit")
    else:
        assert ("all 33 layers" in hint.reason) == (plan in ("cpu", "gpu", "gpu+cpu-experts"))
        assert "tok/s by memory bandwidth" in hint.reason
        assert "estimated from the catalog" in hint.reason
    got_verdict, reason = hint  # unpacks like a tuple
    assert got_verdict == verdict and reason
