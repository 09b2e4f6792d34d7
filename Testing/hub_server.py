"""A tiny Hugging Face Hub stand-in on 127.0.0.1 for tests: model repos served from folders, no internet.

It answers exactly what ``huggingface_hub`` 2.x asks for in ``snapshot_download`` / ``hf_hub_download``:

* ``GET /api/models/{repo}/revision/{rev}`` → ``{"id", "sha", "siblings": [{"rfilename"}]}`` (skipped by the
  client when ``rev`` is already a 40-hex commit),
* ``GET /api/models/{repo}/tree/{rev}?recursive=...`` → ``[{"type": "file", "path", "size", "oid"}]``,
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``,
* 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` as the real Hub does.

Commits are content hashes: adding a folder to a repo makes a new commit and moves the branch to it.
Run as a script (``python Testing/hub_server.py org/name=FOLDER ...``) it serves until interrupted.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def git_blob_id(content: bytes) -> str:
    """The git object id (sha1 of ``blob <size>\\0`` + content) the Hub reports as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer:
    """Threaded HTTP server holding ``{repo_id: {commit: {path: bytes}}}`` and branch refs per repo.

    Use as a context manager; ``url`` is the endpoint to give ``huggingface_hub`` (``HF_ENDPOINT``), and
    ``requests`` records ``(method, path)`` of every request served.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.refs: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:40123``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, folder: str | Path, branch: str = "main") -> str:
        """Commit every file of ``folder`` to ``repo_id`` on ``branch``; return the 40-hex commit id."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                 if p.is_file()}
        commit = hashlib.sha1(json.dumps({k: git_blob_id(v) for k, v in files.items()}).encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[commit] = files
        self.refs.setdefault(repo_id, {})[branch] = commit
        return commit

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | str:
        """Return ``(commit, files)`` or the ``X-Error-Code`` explaining why there is none."""
        if repo_id not in self.repos:
            return "RepoNotFound"
        commit = self.refs[repo_id].get(revision, revision)
        if commit not in self.repos[repo_id]:
            return "RevisionNotFound"
        return commit, self.repos[repo_id][commit]


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet; requests are recorded in ``hub.requests``."""

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if match := _API.match(path):
                found = hub.lookup(match["repo"], match["rev"])
                if isinstance(found, str):
                    return self._error(found)
                commit, files = found
                if match["kind"] == "revision":
                    body = {"id": match["repo"], "modelId": match["repo"], "sha": commit, "private": False,
                            "siblings": [{"rfilename": name} for name in files]}
                else:
                    body = [{"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                            for name, data in files.items()]
                return self._send(json.dumps(body).encode(), {"Content-Type": "application/json"}, send_body)
            if match := _RESOLVE.match(path):
                found = hub.lookup(match["repo"], match["rev"])
                if isinstance(found, str):
                    return self._error(found)
                commit, files = found
                if match["file"] not in files:
                    return self._error("EntryNotFound")
                data = files[match["file"]]
                headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"',
                           "Content-Type": "application/octet-stream"}
                return self._send(data, headers, send_body)
            self._error("RepoNotFound")

        def _error(self, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self._send(body, {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"},
                       True, HTTPStatus.NOT_FOUND)

        def _send(self, body: bytes, headers: dict[str, str], send_body: bool,
                  status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    return Handler


def main(argv: list[str]) -> None:
    """Serve ``org/name=FOLDER`` arguments until interrupted, printing the endpoint."""
    server = HubServer()
    for spec in argv:
        repo_id, folder = spec.split("=", 1)
        print(f"{repo_id}@{server.add_repo(repo_id, folder)}", flush=True)
    with server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
