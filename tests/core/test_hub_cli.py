"""``hub search``, ``hub files`` and ``download REPO:QUANT`` / Hub URLs, in this process against
the loopback Hub; Offline mode refuses each before a connection."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core import network
from mixtral_desk.core.cli import main
from tests.hub_server import LoopbackHub, RemoteFile, make_bytes

REPO = "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"
Q4 = "mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf"
SMALL = make_bytes(200_000, seed=3)


@pytest.fixture
def hub(online: None, mixtral_headers: dict[str, Path]) -> Iterator[LoopbackHub]:
    with LoopbackHub() as server:
        server.add_repo(REPO, {Q4: RemoteFile(path=mixtral_headers["Q4_K_M"], sha256="4" * 64),
                               "mmproj-f16.gguf": RemoteFile(sparse_size=600_000_000,
                                                             sha256="6" * 64)},
                        downloads=5000, likes=300,
                        gguf={"total": 46_702_792_704, "architecture": "llama"})
        server.add_repo("small/Split-GGUF", {
            "s-Q2_K-00001-of-00002.gguf": SMALL[:100_000],
            "s-Q2_K-00002-of-00002.gguf": SMALL[100_000:],
            "s.Q8_0.gguf": SMALL}, downloads=10)
        yield server


def here(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_hub_search(hub: LoopbackHub) -> None:
    code, out, _ = here("hub", "search", "gguf", "--endpoint", hub.url, "--sort", "likes")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["Repository", "Downloads", "Likes"]
    assert lines[1].startswith(REPO) and "46.7B" in lines[1] and "apache-2.0" in lines[1]
    code, out, _ = here("hub", "search", "split", "--endpoint", hub.url, "--json",
                        "--limit", "1")
    data = json.loads(out)
    assert [r["repo_id"] for r in data["repos"]] == ["small/Split-GGUF"]
    assert data["has_more"] is False and data["page"] == 1
    code, out, _ = here("hub", "search", "nothing-like-this", "--endpoint", hub.url)
    assert code == 0 and "No GGUF repository matches" in out


@pytest.mark.parametrize("bad", [["--limit", "0"], ["--limit", "101"], ["--page", "0"],
                                 ["--limit", "10" * 30]])
def test_hub_search_numbers_out_of_range_are_usage_errors(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse's usage error, before any request
        here("hub", "search", "mixtral", *bad)
    assert stop.value.code == 2


def test_hub_files_with_verdicts(hub: LoopbackHub) -> None:
    # A pasted Hub URL: its host is ignored, the endpoint given is used.
    code, out, _ = here("hub", "files", f"{hub.url}/{REPO}", "--endpoint", hub.url,
                        "--ram", "64GiB", "--vram", "0", "--json")
    assert code == 0
    data = json.loads(out)
    entries = {e["name"]: e for e in data["entries"]}
    assert entries[Q4]["fit"]["verdict"] == "cpu" and entries[Q4]["fit"]["n_ctx"] >= 2048
    assert 4.4 < entries[Q4]["bits_per_weight"] < 4.6
    assert entries["mmproj-f16.gguf"]["kind"] == "mmproj" and entries["mmproj-f16.gguf"]["fit"] \
        is None
    code, out, _ = here("hub", "files", REPO, "--endpoint", hub.url, "--ram", "16GiB",
                        "--vram", "0")
    assert code == 0 and "too large by" in out and "vision projector, not a model" in out


def test_download_repo_quant_and_urls(hub: LoopbackHub, tmp_path: Path) -> None:
    code, out, err = here("download", "small/Split-GGUF:q2_k", "--endpoint", hub.url,
                          "--models-dir", str(tmp_path))
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    assert path.name == "s-Q2_K-00001-of-00002.gguf"
    assert (path.parent / "s-Q2_K-00002-of-00002.gguf").read_bytes() == SMALL[100_000:]
    code, out, err = here("download", f"{hub.url}/small/Split-GGUF/blob/main/s.Q8_0.gguf",
                          "--endpoint", hub.url, "--models-dir", str(tmp_path))
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1]).read_bytes() == SMALL


def test_download_reference_errors_name_the_choices(hub: LoopbackHub, tmp_path: Path) -> None:
    code, _, err = here("download", "small/Split-GGUF:Q4_K_M", "--endpoint", hub.url,
                        "--models-dir", str(tmp_path))
    assert code == 1 and "has no Q4_K_M file" in err and "Q2_K, Q8_0" in err
    assert "Traceback" not in err
    code, _, err = here("download", "small/Split-GGUF", "--endpoint", hub.url)
    assert code == 1 and "small/Split-GGUF:Q2_K" in err


def test_offline_refuses_every_hub_command(hub: LoopbackHub) -> None:
    network.set_offline(True)
    try:
        for args in (("hub", "search", "x"), ("hub", "files", REPO),
                     ("download", f"{REPO}:Q4_K_M")):
            code, _, err = here(*args, "--endpoint", hub.url)
            assert code == 1 and "Offline mode" in err, args
    finally:
        network.set_offline(None)
    assert hub.log == []
