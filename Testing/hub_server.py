"""A tiny Hugging Face Hub stand-in on 127.0.0.1 for tests: model repos in memory, no internet.

It answers exactly what ``huggingface_hub`` 2.x asks for.

Downloads (``snapshot_download`` / ``hf_hub_download``):

* ``GET /api/models/{repo}/revision/{rev}`` → ``{"id", "sha", "siblings": [{"rfilename"}]}`` (skipped by the
  client when ``rev`` is already a 40-hex commit),
* ``GET /api/models/{repo}/tree/{rev}?recursive=...`` → ``[{"type": "file", "path", "size", "oid"}]``,
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``,
* 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` as the real Hub does.

Uploads (``create_repo``, ``create_branch``, ``upload_folder``), each needing ``Authorization: Bearer TOKEN``
with a token of :attr:`HubServer.tokens` (401 without or with an unknown one, 403 outside the token's namespace):

* ``POST /api/repos/create`` ``{"name", "organization", "visibility"?}`` → ``{"url"}``, 409 if it exists; a new
  repo has one commit on ``main`` holding ``.gitattributes``, as on the Hub,
* ``POST /api/models/{repo}/branch/{branch}`` ``{"startingPoint"?}`` → 200, 409 if it exists,
* ``POST /api/validate-yaml`` ``{"content"}`` → 200, or 400 with ``{"errors": [{"message"}]}`` for bad YAML,
* ``POST /api/models/{repo}/preupload/{rev}`` → every file ``"uploadMode": "regular"`` (content in the commit
  itself, no LFS), with the ``oid`` of the file already at ``rev`` so that unchanged files are skipped,
* ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: a header with the summary, then ``file`` lines with base64
  content) → ``{"commitUrl", "commitOid"}``; the new commit holds the branch's files plus the uploaded ones.

Search (``list_models``): ``GET /api/models?filter=..&search=..&limit=..&expand=..`` → public repos whose tags
(the main commit's README.md metadata ``tags``, ``library_name`` and ``license:…``) include every filter and whose
id contains the search text, with ``sha``, ``tags``, ``lastModified``, ``downloads``, ``likes`` and ``cardData``.

Commits are content hashes of the files and the parent commit. :attr:`HubServer.messages` keeps each commit's
summary and :attr:`HubServer.requests` every ``(method, path)`` served.
Run as a script (``python Testing/hub_server.py org/name=FOLDER ...``) it serves until interrupted.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>preupload|commit|branch)/(?P<rev>[^/]+)$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # what a new Hub repo starts with
_FRONT_MATTER = re.compile(r"^---\n(?P<yaml>.*?)\n---\n", re.DOTALL)


def git_blob_id(content: bytes) -> str:
    """The git object id (sha1 of ``blob <size>\\0`` + content) the Hub reports as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def card_metadata(files: dict[str, bytes]) -> dict:
    """The YAML metadata of the README.md in ``files`` (an empty dict if there is none or it is not a mapping)."""
    match = _FRONT_MATTER.match(files.get("README.md", b"").decode("utf-8", errors="replace"))
    data = yaml.safe_load(match["yaml"]) if match else None
    return data if isinstance(data, dict) else {}


class HubServer:
    """Threaded HTTP server holding ``{repo_id: {commit: {path: bytes}}}`` and branch refs per repo.

    Use as a context manager; ``url`` is the endpoint to give ``huggingface_hub`` (``HF_ENDPOINT``).
    ``tokens`` maps each accepted token to the namespace (user or organisation) it may write to.
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.refs: dict[str, dict[str, str]] = {}
        self.private: set[str] = set()
        self.modified: dict[str, str] = {}
        self.messages: dict[str, str] = {}
        self.tokens = dict(tokens or {})
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
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
        self.repos.setdefault(repo_id, {})
        self.refs.setdefault(repo_id, {})
        return self.commit(repo_id, branch, files, f"Add {Path(folder).name}")

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], message: str) -> str:
        """Commit ``files`` (the whole new tree) on ``branch`` of an existing repo; return the commit id."""
        parent = self.refs[repo_id].get(branch, "")
        tree = {name: git_blob_id(data) for name, data in sorted(files.items())}
        commit = hashlib.sha1(json.dumps({"parent": parent, "tree": tree}).encode()).hexdigest()
        self.repos[repo_id][commit] = dict(files)
        self.refs[repo_id][branch] = commit
        self.messages[commit] = message
        self.modified[repo_id] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
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

    def listing(self, filters: list[str], search: str) -> list[dict]:
        """Public repos with every tag of ``filters`` and ``search`` in their id, as ``/api/models`` lists them."""
        found = []
        for repo_id in sorted(self.repos):
            if repo_id in self.private or "main" not in self.refs[repo_id]:
                continue
            commit = self.refs[repo_id]["main"]
            metadata = card_metadata(self.repos[repo_id][commit])
            tags = [str(t) for t in metadata.get("tags") or []]
            tags += [str(metadata[key]) if key == "library_name" else f"license:{metadata[key]}"
                     for key in ("library_name", "license") if metadata.get(key)]
            if set(filters) <= set(tags) and search.lower() in repo_id.lower():
                found.append({"id": repo_id, "modelId": repo_id, "sha": commit, "tags": tags, "private": False,
                              "lastModified": self.modified[repo_id], "downloads": 0, "likes": 0,
                              "cardData": metadata})
        return found


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet; requests are recorded in ``hub.requests``."""

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_POST(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with hub.lock:
                self._post(path, body)

        def _answer(self, send_body: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append((self.command, path))
            if path == "/api/models":
                query = parse_qs(url.query)
                found = hub.listing(query.get("filter", []), query.get("search", [""])[0])
                limit = int(query.get("limit", [len(found)])[0])
                return self._json(found[:limit], send_body)
            if match := _API.match(path):
                found = hub.lookup(match["repo"], match["rev"])
                if isinstance(found, str):
                    return self._error(found)
                commit, files = found
                if match["kind"] == "revision":
                    body = {"id": match["repo"], "modelId": match["repo"], "sha": commit,
                            "private": match["repo"] in hub.private,
                            "siblings": [{"rfilename": name} for name in files]}
                else:
                    body = [{"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                            for name, data in files.items()]
                return self._json(body, send_body)
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

        def _post(self, path: str, body: bytes) -> None:
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if path == "/api/repos/create":
                request = json.loads(body)
                repo_id = f"{request.get('organization')}/{request['name']}"
                if not self._may_write(repo_id):
                    return None
                if repo_id in hub.repos:  # the Hub's 409 carries the url too; create_repo(exist_ok=True) reads it
                    body = {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    return self._send(json.dumps(body).encode(), {"X-Error-Code": "RepoExists",
                                                                  "Content-Type": "application/json"},
                                      True, HTTPStatus.CONFLICT)
                hub.repos[repo_id], hub.refs[repo_id] = {}, {}
                hub.commit(repo_id, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
                if request.get("visibility") == "private" or request.get("private"):
                    hub.private.add(repo_id)
                return self._json({"url": f"{hub.url}/{repo_id}"}, True)
            match = _WRITE.match(path)
            if match is None:
                return self._error("RepoNotFound")
            repo_id, revision = match["repo"], match["rev"]
            if not self._may_write(repo_id):
                return None
            if repo_id not in hub.repos:
                return self._error("RepoNotFound")
            refs = hub.refs[repo_id]
            if match["kind"] == "branch":
                if revision in refs:
                    return self._error("BranchExists", HTTPStatus.CONFLICT, "Reference already exists")
                start = json.loads(body or b"{}").get("startingPoint") or "main"
                if refs.get(start, start) not in hub.repos[repo_id]:
                    return self._error("RevisionNotFound")
                refs[revision] = refs.get(start, start)
                return self._json({}, True)
            if revision not in refs:
                return self._error("RevisionNotFound")
            current = hub.repos[repo_id][refs[revision]]
            if match["kind"] == "preupload":
                paths = [entry["path"] for entry in json.loads(body)["files"]]
                return self._json({"files": [
                    {"path": path, "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_blob_id(current[path]) if path in current else None} for path in paths]}, True)
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            files = dict(current)
            for line in lines:
                if line["key"] == "file":
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                elif line["key"] != "header":
                    return self._error("BadRequest", HTTPStatus.BAD_REQUEST,
                                       f"unsupported operation {line['key']}")
            commit = hub.commit(repo_id, revision, files, header["summary"])
            return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                               "pullRequestUrl": None}, True)

        def _may_write(self, repo_id: str) -> bool:
            """Check the bearer token; on failure answer 401 or 403 and return False."""
            token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if token not in hub.tokens:
                self._error("Unauthorized", HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
                return False
            if repo_id.split("/")[0] != hub.tokens[token]:
                self._error("Forbidden", HTTPStatus.FORBIDDEN, "You don't have the rights to create a model under "
                                                               f"the namespace \"{repo_id.split('/')[0]}\"")
                return False
            return True

        def _validate_yaml(self, request: dict) -> None:
            match = _FRONT_MATTER.match(request.get("content", ""))
            try:
                data = yaml.safe_load(match["yaml"]) if match else {}
            except yaml.YAMLError as error:
                data = error
            if match and not isinstance(data, dict):
                body = json.dumps({"errors": [{"message": f"invalid YAML metadata: {data}"}]}).encode()
                return self._send(body, {"Content-Type": "application/json"}, True, HTTPStatus.BAD_REQUEST)
            return self._json({"errors": [], "warnings": []}, True)

        def _json(self, body: object, send_body: bool) -> None:
            self._send(json.dumps(body).encode(), {"Content-Type": "application/json"}, send_body)

        def _error(self, code: str, status: HTTPStatus = HTTPStatus.NOT_FOUND, message: str | None = None) -> None:
            body = json.dumps({"error": message or code}).encode()
            self._send(body, {"X-Error-Code": code, "X-Error-Message": message or code,
                              "Content-Type": "application/json"}, True, status)

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
