"""Fit verdicts before download: a Mixtral-shaped sparse 26 GB file served by the loopback Hub is
planned from its remote header; the header cache answers the second view without a request;
Offline mode refuses before any connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core import network
from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.hub.browse import HubBrowser
from mixtral_desk.core.hub.fit import FitChecker, HeaderCache
from mixtral_desk.core.i18n import set_language
from mixtral_desk.core.planner import simulated_machine
from mixtral_desk.core.units import GiB
from tests.hub_server import LoopbackHub, RemoteFile, make_bytes

REPO = "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"
Q4 = "mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf"
Q2 = "mixtral-8x7b-instruct-v0.1.Q2_K.gguf"


@pytest.fixture
def hub(online: None, mixtral_headers: dict[str, Path]) -> Iterator[LoopbackHub]:
    with LoopbackHub() as server:
        # Made-up sha256s: hashing 26 GB of holes would take a minute.
        server.add_repo(REPO, {
            Q4: RemoteFile(path=mixtral_headers["Q4_K_M"], sha256="4" * 64),
            Q2: RemoteFile(path=mixtral_headers["Q2_K"], sha256="2" * 64),
            "broken.Q8_0.gguf": make_bytes(4096)})
        yield server


def checker(hub: LoopbackHub, ram: int, vram: int = 0,
            cache: HeaderCache | None = None) -> tuple[FitChecker, HubBrowser]:
    client = HubClient(hub.url, use_stored_token=False)
    machine = simulated_machine(ram=ram, vram=vram, gpu_name="RTX 4090" if vram else None)
    return FitChecker(client, machine, cache=cache), HubBrowser(hub=client)


def test_verdicts_from_remote_headers_and_the_cache(hub: LoopbackHub) -> None:
    fit, browser = checker(hub, 64 * GiB, 24 * GiB)
    files = browser.repo_files(REPO)
    seen: list[str] = []
    verdicts = fit.verdicts(REPO, files.commit, files.models,
                            on_verdict=lambda entry, _: seen.append(entry.name))
    assert sorted(seen) == sorted(verdicts) == sorted(["broken.Q8_0.gguf", Q2, Q4])
    q4 = verdicts[Q4]
    assert q4.verdict == "gpu+cpu-experts" and q4.fits
    assert q4.n_ctx is not None and q4.n_ctx >= 4096
    assert q4.tokens_per_s is not None and q4.tokens_per_s > 1
    assert "experts in RAM" in q4.summary() and "tok/s" in q4.summary()
    assert verdicts[Q2].fits
    broken = verdicts["broken.Q8_0.gguf"]
    assert broken.verdict == "unknown" and "GGUF" in broken.summary()
    reads = [r for r in hub.log if r.server == "cdn"]
    assert all(r.status == 206 for r in reads if r.filename != "broken.Q8_0.gguf")
    # The second view of the repository: every header from the cache, no request at all.
    before = len(hub.log)
    again = fit.verdicts(REPO, files.commit, [e for e in files.models if e.name in (Q2, Q4)])
    assert len(hub.log) == before and fit.cache.hits >= 2
    assert again[Q2] == verdicts[Q2]


def test_an_old_per_expert_file_is_said_to_need_converting(online: None,
                                                          mixtral_headers: dict[str, Path]) -> None:
    old, new = "TheBloke/old-GGUF", "someone/new-GGUF"
    with LoopbackHub() as server:
        server.add_repo(old, {Q2: RemoteFile(path=mixtral_headers["Q2_K-per-expert"],
                                             sha256="2" * 64)})
        server.add_repo(new, {Q2: RemoteFile(path=mixtral_headers["Q2_K"], sha256="3" * 64)})
        fit, browser = checker(server, 64 * GiB)
        verdicts = {}
        for repo in (old, new):
            files = browser.repo_files(repo)
            verdicts[repo] = fit.verdict(repo, files.commit, files.models[0])
    assert verdicts[old].fits and verdicts[old].needs_conversion
    assert verdicts[old].summary().endswith(
        " · old layout (one tensor per expert): convert it after downloading")
    assert verdicts[old].to_json_dict()["needs_conversion"] is True
    assert verdicts[new].fits and not verdicts[new].needs_conversion
    assert "old layout" not in verdicts[new].summary()


def test_too_large_says_by_how_much(hub: LoopbackHub) -> None:
    fit, browser = checker(hub, 8 * GiB)
    files = browser.repo_files(REPO)
    entry = next(e for e in files.models if e.name == Q4)
    verdict = fit.verdict(REPO, files.commit, entry)
    assert verdict.verdict == "too-large" and not verdict.fits
    assert verdict.over_by is not None and 15 * GiB < verdict.over_by < 25 * GiB
    assert verdict.summary().startswith("too large by ") and "GiB" in verdict.summary()
    set_language("zh_CN")
    try:
        assert "太大" in verdict.summary()
    finally:
        set_language("en")


def test_cancelled_checks_read_nothing_more(hub: LoopbackHub) -> None:
    fit, browser = checker(hub, 64 * GiB)
    files = browser.repo_files(REPO)
    cancelled = threading.Event()
    cancelled.set()
    before = len(hub.log)
    assert fit.verdicts(REPO, files.commit, files.models, cancelled=cancelled) == {}
    assert len(hub.log) == before


def test_offline_mode_gives_unknown_without_a_request(hub: LoopbackHub) -> None:
    fit, browser = checker(hub, 64 * GiB)
    files = browser.repo_files(REPO)
    before = len(hub.log)
    network.set_offline(True)
    try:
        verdict = fit.verdict(REPO, files.commit, files.models[0])
    finally:
        network.set_offline(None)
    assert verdict.verdict == "unknown" and "offline mode is on" in verdict.summary()
    assert len(hub.log) == before


def test_the_token_applies_to_a_gated_repos_headers(hub: LoopbackHub,
                                                    mixtral_headers: dict[str, Path]) -> None:
    hub.add_repo("mistralai/Gated-GGUF",
                 {Q2: RemoteFile(path=mixtral_headers["Q2_K"], sha256="2" * 64)}, gated=True)
    hub.add_token("hf_accepted", "mistralai/Gated-GGUF")
    machine = simulated_machine(ram=64 * GiB)
    anonymous = HubClient(hub.url, use_stored_token=False)
    files = HubBrowser(hub=anonymous).repo_files("mistralai/Gated-GGUF")  # metadata is public
    refused = FitChecker(anonymous, machine).verdict(files.repo_id, files.commit, files.models[0])
    assert refused.verdict == "unknown" and "gated model" in refused.summary()
    signed_in = HubClient(hub.url, "hf_accepted", use_stored_token=False)
    verdict = FitChecker(signed_in, machine).verdict(files.repo_id, files.commit,
                                                     files.models[0])
    assert verdict.verdict == "cpu" and verdict.tokens_per_s
    assert any(r.authorized for r in hub.log if r.server == "hub" and r.filename == Q2)
