"""Hub access through huggingface_hub against the loopback Hub: the distinct, typed errors.

Licence not accepted (with the repo URL), no token, bad token, token without access, repo / file /
revision not found, offline; the endpoint setting and HF_ENDPOINT; the token never sent to the CDN.
"""

from __future__ import annotations

from collections.abc import Iterator

import huggingface_hub.constants
import pytest

from mixtral_desk.core.downloads.errors import (
    HubAccessError,
    HubUnavailableError,
    InvalidTokenError,
    LicenceNotAcceptedError,
    RemoteFileNotFoundError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TokenAccessError,
    TokenRequiredError,
)
from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.downloads.manager import DownloadManager
from mixtral_desk.core.downloads.transfer import RetryPolicy
from mixtral_desk.core.paths import DataPaths
from tests.hub_server import LoopbackHub, make_bytes

DATA = make_bytes(200_000, seed=5)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with LoopbackHub() as server:
        server.add_repo("owner/open", {"open.gguf": DATA})
        server.add_repo("meta/gated", {"gated.gguf": DATA}, gated=True)
        server.add_repo("me/private", {"private.gguf": DATA}, private=True)
        server.add_token("hf_accepted", "meta/gated", "me/private")
        server.add_token("hf_not_accepted")
        server.add_token("hf_scoped", scoped=True)
        yield server


def client(hub: LoopbackHub, token: str | None = None) -> HubClient:
    return HubClient(hub.url, token, use_stored_token=False)


def test_resolve_pins_the_commit_and_gives_size_and_sha256(hub: LoopbackHub) -> None:
    resolved = client(hub).resolve("owner/open", ["open.gguf"])
    assert resolved.commit == hub.repos["owner/open"].commit
    [info] = resolved.files
    assert (info.size, info.sha256) == (len(DATA), hub.repos["owner/open"].files[
        "open.gguf"].sha256)


def test_gated_repo_without_token_asks_for_one(hub: LoopbackHub) -> None:
    with pytest.raises(TokenRequiredError, match="needs a Hugging Face token") as caught:
        client(hub).resolve("meta/gated", ["gated.gguf"])
    assert f"{hub.url}/meta/gated" in str(caught.value)
    assert isinstance(caught.value, PermissionError)


def test_gated_licence_not_accepted_names_the_repo_page(hub: LoopbackHub) -> None:
    with pytest.raises(LicenceNotAcceptedError, match="not accepted the licence") as caught:
        client(hub, "hf_not_accepted").resolve("meta/gated", ["gated.gguf"])
    assert caught.value.url == f"{hub.url}/meta/gated"
    assert caught.value.url in str(caught.value)
    assert "hf_not_accepted" not in str(caught.value)


def test_gated_repo_with_access_downloads_without_leaking_the_token(
        hub: LoopbackHub, data_home: DataPaths) -> None:
    manager = DownloadManager(paths=data_home, endpoint=hub.url, token="hf_accepted",
                              space_margin=0, policy=RetryPolicy(base_delay=0.01))
    path = manager.run(manager.add_repo("meta/gated", ["gated.gguf"]).id)
    assert path.read_bytes() == DATA
    hub_calls = [r for r in hub.log if r.server == "hub"]
    cdn_calls = [r for r in hub.log if r.server == "cdn"]
    assert hub_calls and all(r.authorized for r in hub_calls)
    assert cdn_calls and not any(r.authorized for r in cdn_calls)


def test_bad_token_is_told_apart(hub: LoopbackHub) -> None:
    with pytest.raises(InvalidTokenError, match="rejected your Hugging Face token") as caught:
        client(hub, "hf_typo").resolve("meta/gated", ["gated.gguf"])
    assert "hf_typo" not in str(caught.value)


def test_token_without_access_is_told_apart(hub: LoopbackHub) -> None:
    with pytest.raises(TokenAccessError, match="does not grant access"):
        client(hub, "hf_scoped").resolve("meta/gated", ["gated.gguf"])


def test_private_repo_looks_missing_without_a_token(hub: LoopbackHub) -> None:
    with pytest.raises(RepoNotFoundError, match="If it is private, sign in"):
        client(hub).resolve("me/private", ["private.gguf"])
    assert client(hub, "hf_accepted").resolve("me/private", ["private.gguf"]).files


def test_missing_repo_file_and_revision_have_their_own_errors(hub: LoopbackHub) -> None:
    with pytest.raises(RepoNotFoundError, match="nobody/nothing was not found") as repo:
        client(hub).resolve("nobody/nothing", ["x.gguf"])
    assert isinstance(repo.value, FileNotFoundError)
    assert not isinstance(repo.value, HubAccessError)
    with pytest.raises(RemoteFileNotFoundError, match=r"open\.gguf") as file:
        client(hub).resolve("owner/open", ["typo.gguf"])
    assert isinstance(file.value, FileNotFoundError)
    with pytest.raises(RevisionNotFoundError, match="'v9' does not exist") as revision:
        client(hub).resolve("owner/open", ["open.gguf"], revision="v9")
    assert isinstance(revision.value, LookupError)


def test_job_with_a_hub_error_fails_with_the_message(hub: LoopbackHub,
                                                      data_home: DataPaths) -> None:
    manager = DownloadManager(paths=data_home, endpoint=hub.url, use_stored_token=False)
    job = manager.add_repo("meta/gated", ["gated.gguf"])
    with pytest.raises(TokenRequiredError):
        manager.run(job.id)
    failed = manager.get(job.id)
    assert failed.state == "failed" and "gated" in str(failed.error)
    assert hub.gets("gated.gguf") == []


def test_offline_mode_is_a_clear_error(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match="Offline mode"):
        client(hub).resolve("owner/open", ["open.gguf"])


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with LoopbackHub() as gone:
        url = gone.url
    with pytest.raises(HubUnavailableError, match="Cannot reach"):
        HubClient(url, use_stored_token=False).resolve("owner/open", ["open.gguf"])


def test_hf_endpoint_is_read_at_call_time(hub: LoopbackHub,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert HubClient(use_stored_token=False).endpoint == hub.url
    assert HubClient(use_stored_token=False).resolve("owner/open", ["open.gguf"]).files
