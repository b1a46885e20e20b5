"""A loopback Hugging Face Hub for tests and the benchmark: real HTTP on 127.0.0.1, no network.

Two servers share one state, like the real Hub and its CDN: the *hub* (``url``) answers the API
(search ``/api/models``, model info, paths-info, tree, auth-check) and ``resolve`` requests,
which redirect with a signed, expiring URL to the *cdn* (``cdn_url``, another origin, so clients
drop the token there as they must). Headers follow ../shared/notes/hub-protocol.md:
``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256), ``X-Linked-Size``, ``X-Error-Code`` on errors;
never any ``X-Xet-*`` header.

Fault injection (:class:`Fault`, queued per file name and consumed by the CDN's GETs): a dropped
connection mid-body, a TCP reset, a stall, a 5xx/429 status, wrong bytes, a ``Range`` ignored.
``throttle_bps`` slows every body down, ``latency_s`` delays every answer (both servers).
Every request is logged in :attr:`LoopbackHub.log`.

Search answers as the Hub does for ``HfApi.list_models``: ``search`` (a substring of the id, any
case), ``filter`` (tags, repeatable), ``sort`` (descending), ``limit`` (the page size, at most
:attr:`LoopbackHub.api_page_size`), ``expand`` (repeatable: only those fields and ``id``/``_id``
come back; without it, the Hub's default fields), pages linked by ``Link: <…cursor=N…>;
rel="next"``. ``broken`` names API answers to spoil: ``"search"`` (not JSON), ``"info"`` (JSON of
the wrong shape).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

FaultKind = Literal["drop", "reset", "stall", "status", "corrupt", "ignore_range"]
_CHUNK = 64 * 1024


@dataclass
class Fault:
    """One misbehaviour of the CDN, applied to the next GET of a file.

    ``drop``/``reset``/``stall`` happen after ``after`` body bytes of that response; ``stall``
    waits ``seconds`` (or until the server stops) and then closes. ``status`` answers ``status``
    (with ``Retry-After: retry_after`` when given). ``corrupt`` flips the byte at absolute offset
    ``after``. ``ignore_range`` answers 200 with the whole file.
    """

    kind: FaultKind
    after: int = 0
    status: int = 500
    retry_after: int | None = None
    seconds: float = 60.0


@dataclass
class RemoteFile:
    """A file in a loopback repository: bytes in memory, a file on disk, or only a size."""

    data: bytes | None = None
    path: Path | None = None
    sparse_size: int | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            digest = hashlib.sha256()
            for chunk in self.chunks(0, self.size):
                digest.update(chunk)
            self.sha256 = digest.hexdigest()

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.path is not None:
            return self.path.stat().st_size
        assert self.sparse_size is not None
        return self.sparse_size

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in pieces of at most 64 KiB."""
        if self.data is not None:
            view = memoryview(self.data)
            for pos in range(start, end, _CHUNK):
                yield bytes(view[pos:min(pos + _CHUNK, end)])
        elif self.path is not None:
            with self.path.open("rb") as handle:
                handle.seek(start)
                pos = start
                while pos < end:
                    piece = handle.read(min(_CHUNK * 16, end - pos))
                    if not piece:
                        return
                    pos += len(piece)
                    yield piece
        else:
            for pos in range(start, end, _CHUNK):
                yield bytes(min(_CHUNK, end - pos))


@dataclass
class HubRepo:
    """A repository: files at one commit, with ``main`` (and any extra branch) pointing at it."""

    repo_id: str
    files: dict[str, RemoteFile]
    commit: str
    gated: bool = False
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    downloads: int = 0
    likes: int = 0
    trending: int = 0
    last_modified: str = "2024-01-01T00:00:00.000Z"
    created_at: str = "2023-12-11T00:00:00.000Z"
    licence: str | None = "apache-2.0"
    tags: list[str] = field(default_factory=list)
    gguf: dict[str, object] | None = None

    def fields(self) -> dict[str, object]:
        """The repository's metadata as the Hub's JSON names it (everything ``expand`` offers)."""
        tags = self.tags or (["gguf"] if any(n.endswith(".gguf") or ".gguf" in n
                                             for n in self.files) else [])
        tags = [*tags, *([f"license:{self.licence}"] if self.licence else [])]
        return {"_id": self.commit[:24], "id": self.repo_id, "author": self.repo_id.split("/")[0],
                "downloads": self.downloads, "likes": self.likes, "trendingScore": self.trending,
                "lastModified": self.last_modified, "createdAt": self.created_at,
                "private": self.private, "gated": "manual" if self.gated else False,
                "tags": tags, "library_name": "gguf" if "gguf" in tags else None,
                "pipeline_tag": "text-generation",
                **({"gguf": self.gguf} if self.gguf is not None else {}),
                **({"cardData": {"license": self.licence}} if self.licence else {})}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. ``range_start`` is N of ``Range: bytes=N-``."""

    server: Literal["hub", "cdn"]
    method: str
    path: str
    range_start: int | None
    authorized: bool
    status: int
    filename: str | None = None


@dataclass
class TokenSpec:
    """A token the server knows: repos it may read; ``scoped`` tokens get a plain 403 elsewhere."""

    repos: set[str] = field(default_factory=set)
    scoped: bool = False


class LoopbackHub:
    """The loopback Hub. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, *, throttle_bps: int | None = None, url_ttl_s: float = 3600.0,
                 latency_s: float = 0.0, api_page_size: int = 1000) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.latency_s = latency_s
        self.api_page_size = api_page_size
        self.broken: set[str] = set()
        self.tokens: dict[str, TokenSpec] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.log: list[RequestRecord] = []
        self.throttle_bps = throttle_bps
        self.url_ttl_s = url_ttl_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._hub = _Server(("127.0.0.1", 0), _HubHandler, self, "hub")
        self._cdn = _Server(("127.0.0.1", 0), _CdnHandler, self, "cdn")
        self._threads: list[threading.Thread] = []

    # --- set-up ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Hub endpoint, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path | RemoteFile], *,
                 gated: bool = False, private: bool = False, **meta: object) -> HubRepo:
        """Add (or replace) a repository and return it; its commit is derived from its files.
        ``meta``: :class:`HubRepo`'s metadata fields (``downloads``, ``likes``, ``gguf`` …)."""
        remote = {name: value if isinstance(value, RemoteFile)
                  else RemoteFile(path=value) if isinstance(value, Path) else RemoteFile(data=value)
                  for name, value in files.items()}
        commit = hashlib.sha1(
            (repo_id + "".join(f.sha256 for f in remote.values())).encode()).hexdigest()
        repo = HubRepo(repo_id, remote, commit, gated=gated, private=private,
                       branches={"main": commit}, **meta)  # type: ignore[arg-type]
        self.repos[repo_id] = repo
        return repo

    def add_token(self, token: str, *repos: str, scoped: bool = False) -> None:
        """Make ``token`` valid, with access to ``repos`` (licence accepted / member)."""
        self.tokens[token] = TokenSpec(set(repos), scoped)

    def inject(self, filename: str, *faults: Fault) -> None:
        """Queue faults for the next GETs of ``filename`` (its path in the repository)."""
        with self._lock:
            self.faults.setdefault(filename, []).extend(faults)

    def next_fault(self, filename: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(filename)
            return queue.pop(0) if queue else None

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self.log.append(entry)

    def gets(self, filename: str) -> list[RequestRecord]:
        """The CDN GETs of one file, in order."""
        return [r for r in self.log
                if r.server == "cdn" and r.method == "GET" and r.filename == filename]

    # --- life ------------------------------------------------------------------------------------

    def start(self) -> LoopbackHub:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"loopback-{server.role}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 hub: LoopbackHub, role: Literal["hub", "cdn"]) -> None:
        self.hub = hub
        self.role = role
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (paused, cancelled, killed) is normal here: stay quiet."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def parse_request(self) -> bool:
        if self.hub.latency_s and not self.hub.stopping.is_set():
            self.hub.stopping.wait(self.hub.latency_s)
        return super().parse_request()

    @property
    def hub(self) -> LoopbackHub:
        return self.server.hub

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        return header[7:] if header.startswith("Bearer ") else None

    def _range(self) -> tuple[int, int | None] | None:
        """``Range: bytes=N-`` or ``bytes=N-M`` as (N, M or None); None without one."""
        value = self.headers.get("Range", "")
        start, dash, end = value[6:].partition("-")
        if value.startswith("bytes=") and dash and start.isdigit() and (not end or end.isdigit()):
            return int(start), int(end) if end else None
        return None

    def _range_start(self) -> int | None:
        found = self._range()
        return found[0] if found else None

    def _log(self, status: int, filename: str | None = None) -> None:
        self.hub.record(RequestRecord(self.server.role, self.command, self.path,
                                      self._range_start(), self._token() is not None, status,
                                      filename))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              *, filename: str | None = None) -> None:
        self._log(status, filename)
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _json(self, data: object) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)


class _HubHandler(_Handler):
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        self._drain() if self.command == "POST" else None
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if parts == ["api", "models"]:
            self._search()
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        elif len(parts) >= 4 and parts[:2] == ["api", "models"]:
            self._api(f"{parts[2]}/{parts[3]}", parts[4:])
        else:
            self._error(404, None, "Not found")

    def _search(self) -> None:
        if "search" in self.hub.broken:
            self._send(200, b"<html>a captive portal</html>", {"Content-Type": "text/html"})
            return
        query = parse_qs(urlsplit(self.path).query)
        text = query.get("search", [""])[0].lower()
        tags = query.get("filter", [])
        token = self._token()
        spec = self.hub.tokens.get(token) if token else None
        found = [r.fields() for r in self.hub.repos.values()
                 if text in r.repo_id.lower()
                 and (not r.private or (spec is not None and r.repo_id in spec.repos))]
        found = [f for f in found if all(t in f["tags"] for t in tags)]  # type: ignore[operator]
        sort = query.get("sort", [""])[0]
        if sort:
            found.sort(key=lambda f: f.get(sort) or 0, reverse=True)  # type: ignore[arg-type,return-value]
        expand = query.get("expand", [])
        keep = {"_id", "id", *expand} if expand else {
            "_id", "id", "likes", "trendingScore", "private", "downloads", "tags",
            "pipeline_tag", "library_name", "createdAt"}
        limit = int(query.get("limit", ["1000"])[0])
        size = min(limit, self.hub.api_page_size)
        start = int(query.get("cursor", ["0"])[0])
        page = [{k: v for k, v in f.items() if k in keep} for f in found[start:start + size]]
        headers = {"Content-Type": "application/json"}
        if start + size < len(found):
            rest = {k: v for k, v in query.items() if k != "cursor"}
            pairs = "&".join(f"{k}={quote(v)}" for k, vs in rest.items() for v in vs)
            headers["Link"] = f'<{self.hub.url}/api/models?{pairs}&cursor={start + size}>; ' \
                'rel="next"'
        self._send(200, json.dumps(page).encode(), headers)

    def _access(self, repo_id: str, *, file_access: bool) -> HubRepo | None:
        """The repo if this request may see it; otherwise answers the error and returns None."""
        token = self._token()
        spec = self.hub.tokens.get(token) if token else None
        if token is not None and spec is None:
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get(repo_id)
        allowed = spec is not None and repo_id in spec.repos
        if repo is None or (repo.private and not allowed and not (spec and spec.scoped)):
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        if (repo.private or (repo.gated and file_access)) and not allowed:
            if spec is not None and spec.scoped:
                self._error(403, None, "This fine-grained token does not have access to "
                            f"{repo_id}")
            elif token is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must "
                            "have access to it and be authenticated to access it. Please log in.")
            else:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you "
                            f"are not in the authorized list. Visit {self.hub.url}/{repo_id} "
                            "to ask for access.")
            return None
        return repo

    def _commit(self, repo: HubRepo, revision: str) -> str | None:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision == repo.commit:
            return revision
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return None

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._access(repo_id, file_access=True)
        if repo is None:
            return
        commit = self._commit(repo, revision)
        if commit is None:
            return
        remote = repo.files.get(filename)
        if remote is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}")
            return
        expires = time.time() + self.hub.url_ttl_s
        location = (f"{self.hub.cdn_url}/blobs/{remote.sha256}?expires={expires:.3f}"
                    f"&repo={quote(repo_id, safe='')}&file={quote(filename, safe='')}")
        self._send(302, b"", {
            "Location": location,
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{remote.sha256}"',
            "X-Linked-Size": str(remote.size),
            "ETag": f'"{remote.sha256}"',
        }, filename=filename)

    def _entry(self, name: str, remote: RemoteFile) -> dict[str, object]:
        return {"type": "file", "path": name, "size": remote.size, "oid": remote.sha256[:40],
                "lfs": {"oid": remote.sha256, "size": remote.size, "pointerSize": 134}}

    def _api(self, repo_id: str, rest: list[str]) -> None:
        if rest == ["auth-check"]:
            if self._access(repo_id, file_access=True) is not None:
                self._json({})
            return
        repo = self._access(repo_id, file_access=False)
        if repo is None:
            return
        if not rest or rest[0] == "revision":
            commit = self._commit(repo, "/".join(rest[1:]) if rest else "main")
            if commit is None:
                return
            blobs = parse_qs(urlsplit(self.path).query).get("blobs") == ["true"]
            siblings = [{"rfilename": name, **({"size": f.size, "blobId": f.sha256[:40],
                         "lfs": {"size": f.size, "sha256": f.sha256, "pointerSize": 134}}
                         if blobs else {})} for name, f in repo.files.items()]
            if "info" in self.hub.broken:
                self._json([{"id": repo.repo_id}])
                return
            self._json({**repo.fields(), "sha": commit, "siblings": siblings})
        elif rest[0] in ("paths-info", "tree") and len(rest) >= 2:
            if self._commit(repo, rest[1]) is None:
                return
            self._json([self._entry(n, f) for n, f in repo.files.items()])
        else:
            self._error(404, None, "Not found")


class _CdnHandler(_Handler):
    def do_HEAD(self) -> None:
        self._blob()

    def do_GET(self) -> None:
        self._blob()

    def _blob(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        repo = self.hub.repos.get(query.get("repo", [""])[0])
        filename = query.get("file", [""])[0]
        remote = repo.files.get(filename) if repo else None
        if remote is None or not url.path.startswith("/blobs/"):
            self._error(404, None, "No such blob")
            return
        if float(query.get("expires", ["0"])[0]) < time.time():
            self._error(403, None, "Request has expired")
            return
        fault = self.hub.next_fault(filename) if self.command == "GET" else None
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            self._send(fault.status, b"server trouble", headers, filename=filename)
            return
        self._body(remote, filename, fault)

    def _body(self, remote: RemoteFile, filename: str, fault: Fault | None) -> None:
        size = remote.size
        start = self._range_start()
        if fault is not None and fault.kind == "ignore_range":
            start = None
        if start is not None and start >= size:
            self._send(416, b"", {"Content-Range": f"bytes */{size}"}, filename=filename)
            return
        status = 206 if start is not None else 200
        begin = start or 0
        asked = self._range()
        end = size if start is None or asked is None or asked[1] is None \
            else min(size, asked[1] + 1)  # a closed range "bytes=N-M" ends after M
        self._log(status, filename)
        self.send_response(status)
        self.send_header("Content-Length", str(end - begin))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{remote.sha256}"')
        if start is not None:
            self.send_header("Content-Range", f"bytes {begin}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(remote, begin, end, fault)

    def _stream(self, remote: RemoteFile, begin: int, size: int, fault: Fault | None) -> None:
        if fault is None and self.hub.throttle_bps is None and remote.path is not None:
            with remote.path.open("rb") as handle:
                self.wfile.flush()
                self.connection.sendfile(handle, begin, size - begin)
            return
        limit = size if fault is None or fault.kind in ("corrupt", "ignore_range") \
            else min(size, begin + fault.after)
        sent, started = begin, time.monotonic()
        for chunk in remote.chunks(begin, limit):
            corrupt = fault is not None and fault.kind == "corrupt"
            if corrupt and fault is not None and sent <= fault.after < sent + len(chunk):
                i = fault.after - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            self.wfile.write(chunk)
            sent += len(chunk)
            if self.hub.throttle_bps:
                ahead = (sent - begin) / self.hub.throttle_bps - (time.monotonic() - started)
                if ahead > 0 and self.hub.stopping.wait(ahead):
                    break
        if fault is None or fault.kind in ("corrupt", "ignore_range"):
            return
        self.wfile.flush()
        self.close_connection = True
        if fault.kind == "stall":
            self.hub.stopping.wait(fault.seconds)
        elif fault.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        if fault.kind != "reset":
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def make_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (fast: a sha256 chain repeated with a counter)."""
    block = hashlib.sha256(f"seed-{seed}".encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += block
        out[-8:] = counter.to_bytes(8, "little")
        counter += 1
    return bytes(out[:size])


def make_random_file(path: Path, size: int) -> Path:
    """Write ``size`` random bytes to ``path`` once (kept if it already has that size)."""
    if path.exists() and path.stat().st_size == size:
        return path
    with path.open("wb") as handle:
        left = size
        while left:
            n = min(left, 16 * 1024 * 1024)
            handle.write(os.urandom(n))
            left -= n
    return path
