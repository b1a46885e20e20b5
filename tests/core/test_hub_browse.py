"""Hub browsing against the loopback Hub: search with sort and paging (as huggingface_hub's own
``list_models`` reads it too), quant grouping, gated licences, empty and malformed answers, and
the forms users paste."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from huggingface_hub import HfApi

from mixtral_desk.core.downloads.errors import HubOfflineError, RepoNotFoundError
from mixtral_desk.core.hub.browse import HubAnswerError, HubBrowser
from mixtral_desk.core.hub.quants import find_quant, group_files, quant_label
from mixtral_desk.core.hub.references import (
    HubReference,
    HubReferenceError,
    looks_like_reference,
    parse_reference,
)
from tests.hub_server import LoopbackHub, RemoteFile

SPLIT = [f"Q8_0/Mixtral-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


@pytest.fixture
def hub(online: None) -> Iterator[LoopbackHub]:
    with LoopbackHub(api_page_size=4) as server:  # small pages: the Link header is followed
        for i in range(9):
            server.add_repo(f"org{i}/Mixtral-{i}-GGUF",
                            {"m.Q4_K_M.gguf": RemoteFile(sparse_size=1000 + i)},
                            downloads=100 * i, likes=9 - i, trending=(i * 7) % 9,
                            last_modified=f"2024-0{1 + i % 9}-01T00:00:00.000Z",
                            gguf={"total": 46_702_792_704, "architecture": "llama",
                                  "context_length": 32768})
        server.add_repo("mistralai/Mixtral-8x7B-v0.1", {"model.safetensors": b"x"})
        server.add_repo("big/Mixtral-Split-GGUF", {
            **{name: RemoteFile(sparse_size=10_000) for name in SPLIT},
            "old.Q6_K.gguf.part1of2": RemoteFile(sparse_size=7000),
            "old.Q6_K.gguf.part2of2": RemoteFile(sparse_size=3000),
            "Mixtral.IQ2_XXS.gguf": RemoteFile(sparse_size=2000),
            "mmproj-Mixtral-f16.gguf": RemoteFile(sparse_size=500),
            "README.md": b"# readme"}, licence="mit")
        server.add_repo("meta/Gated-GGUF", {"g.Q4_0.gguf": RemoteFile(sparse_size=10)},
                        gated=True, licence="llama2")
        yield server


def test_search_sorts_and_pages_like_the_hub(hub: LoopbackHub) -> None:
    browser = HubBrowser(hub.url)
    first = browser.search("mixtral", "downloads", page=0, page_size=3)
    assert [r.repo_id for r in first.repos] == [f"org{i}/Mixtral-{i}-GGUF" for i in (8, 7, 6)]
    assert first.has_more
    top = first.repos[0]
    assert (top.downloads, top.likes, top.licence, top.gated) == (800, 1, "apache-2.0", False)
    assert (top.parameters, top.architecture) == (46_702_792_704, "llama")
    last = browser.search("mixtral", "downloads", page=3, page_size=3)
    assert [r.repo_id for r in last.repos] == ["big/Mixtral-Split-GGUF"] and not last.has_more
    # The safetensors-only repo is not GGUF: never listed.
    everything = browser.search("mixtral", "likes", page=0, page_size=20)
    assert "mistralai/Mixtral-8x7B-v0.1" not in [r.repo_id for r in everything.repos]
    assert [r.likes for r in everything.repos][:3] == [9, 8, 7]
    updated = browser.search("mixtral", "updated", page=0, page_size=2).repos
    assert updated[0].updated is not None and updated[0].updated >= updated[1].updated  # type: ignore[operator]
    searches = [r for r in hub.log if r.path.startswith("/api/models?")]
    assert any("cursor=" in r.path for r in searches)  # the pages were followed


def test_the_loopback_search_answers_huggingface_hubs_own_client(hub: LoopbackHub) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    found = list(api.list_models(search="mixtral", filter="gguf", sort="trending_score",
                                 limit=6, expand=["downloads", "gguf", "gated"]))
    assert len(found) == 6 and all(m.downloads is not None and m.gguf for m in found[:5])
    scores = [hub.repos[m.id].trending for m in found]
    assert scores == sorted(scores, reverse=True)
    assert found[0].likes is None  # not expanded, so not sent


def test_files_are_grouped_by_quant(hub: LoopbackHub) -> None:
    files = HubBrowser(hub.url).repo_files("big/Mixtral-Split-GGUF")
    names = [(e.quant, e.parts, e.size, e.kind) for e in files.entries]
    assert names == [("IQ2_XXS", 1, 2000, "model"), ("Q6_K", 2, 10_000, "model"),
                     ("Q8_0", 3, 30_000, "model"), ("F16", 1, 500, "mmproj")]
    assert files.entries[2].files == tuple(SPLIT) and files.entries[2].name == SPLIT[0]
    assert files.entries[1].name == "old.Q6_K.gguf"
    assert [e.quant for e in files.models] == ["IQ2_XXS", "Q6_K", "Q8_0"]
    assert files.licence == "mit" and files.commit == hub.repos["big/Mixtral-Split-GGUF"].commit
    assert find_quant(files.entries, "q8_0") == files.entries[2]
    assert find_quant(files.entries, "F16") is None  # a projector is not a model


def test_a_gated_repo_shows_its_licence_and_where_to_accept_it(hub: LoopbackHub) -> None:
    files = HubBrowser(hub.url).repo_files("meta/Gated-GGUF")
    assert files.gated == "manual" and files.licence == "llama2"
    assert files.url == f"{hub.url}/meta/Gated-GGUF"
    assert [e.name for e in files.models] == ["g.Q4_0.gguf"]


def test_a_repo_without_gguf_says_so(hub: LoopbackHub) -> None:
    files = HubBrowser(hub.url).repo_files("mistralai/Mixtral-8x7B-v0.1")
    assert files.entries == () and files.models == []
    with pytest.raises(RepoNotFoundError, match="nobody/nothing was not found"):
        HubBrowser(hub.url).repo_files("nobody/nothing")


def test_a_malformed_answer_is_a_clear_error(hub: LoopbackHub) -> None:
    hub.broken = {"search", "info"}
    browser = HubBrowser(hub.url)
    with pytest.raises(HubAnswerError, match="not a Hub answer") as error:
        browser.search("mixtral")
    assert hub.url in str(error.value)
    with pytest.raises(HubAnswerError, match="/api/models/big/Mixtral-Split-GGUF"):
        browser.repo_files("big/Mixtral-Split-GGUF")


def test_offline_mode_refuses_before_any_request(hub: LoopbackHub,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mixtral_desk.core import network

    network.set_offline(True)
    try:
        with pytest.raises(HubOfflineError, match="Offline mode"):
            HubBrowser(hub.url).search("mixtral")
        with pytest.raises(HubOfflineError):
            HubBrowser(hub.url).repo_files("big/Mixtral-Split-GGUF")
    finally:
        network.set_offline(None)
    assert hub.log == []


# Pasted URLs are parsed, never fetched, and any host is accepted (a mirror's too): loopback
# hosts stand in for the Hub's and a mirror's here.
HOST = "https://127.0.0.1"
MIRROR = "http://localhost:8080"


@pytest.mark.parametrize(("text", "expected"), [
    ("TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF",
     HubReference("TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF")),
    ("org/repo:Q4_K_M", HubReference("org/repo", quant="Q4_K_M")),
    (f"{HOST}/org/repo", HubReference("org/repo")),
    (f"{MIRROR}/org/repo/tree/v2", HubReference("org/repo", revision="v2")),
    (f"{HOST}/org/repo/blob/main/sub/m-Q4_K_M.gguf",
     HubReference("org/repo", revision="main", filename="sub/m-Q4_K_M.gguf")),
    (f"{HOST}/org/repo/resolve/abc123/m.gguf?download=true",
     HubReference("org/repo", revision="abc123", filename="m.gguf")),
    ("  org/repo  ", HubReference("org/repo")),
])
def test_paste_forms(text: str, expected: HubReference) -> None:
    assert parse_reference(text) == expected
    assert looks_like_reference(text)


@pytest.mark.parametrize("text", ["mixtral", "org/", "/repo", "org/repo:", "a/b/c",
                                  "org/repo:Q4 K", f"{HOST}/org",
                                  f"{HOST}/org/repo/discussions/3"])
def test_bad_paste_forms_say_what_is_accepted(text: str) -> None:
    with pytest.raises(HubReferenceError, match="owner/name:QUANT"):
        parse_reference(text)


def test_quant_labels_and_sets() -> None:
    assert quant_label("mixtral-8x7b-instruct-v0.1.Q5_K_M.gguf") == "Q5_K_M"
    assert quant_label("Mixtral-8x7B-Instruct-v0.1-IQ3_XXS.gguf") == "IQ3_XXS"
    assert quant_label("model-bf16-00001-of-00002.gguf") == "BF16"
    assert quant_label("model.gguf") == "?"
    entries = group_files([("a-00002-of-00002.gguf", 5), ("a-00001-of-00002.gguf", 4),
                           ("notes.txt", 1)])
    assert [(e.name, e.files, e.size) for e in entries] == [
        ("a-00001-of-00002.gguf", ("a-00001-of-00002.gguf", "a-00002-of-00002.gguf"), 9)]
