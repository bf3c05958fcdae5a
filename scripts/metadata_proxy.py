"""A local package index in front of the real one that serves wheel metadata (PEP 658) from a cache.

A pip dry-run only needs each candidate's metadata. PyPI serves it as `<wheel>.metadata`; a registry that
does not (a mirror, a proxy) makes pip download every wheel instead -- 3 GB per Python for torch and its
CUDA libraries -- on every run, and without cache headers pip's own HTTP cache keeps none of it. This proxy
forwards index pages (PEP 691 JSON) live, marks every wheel as having metadata, and answers
`<wheel>.metadata` from ~/.cache/qlora-raft-workshop/wheel-metadata/<sha256> (a wheel's hash names
immutable content), downloading a wheel once, the first time, to read it. Files whose metadata the registry
already serves are left pointing at the registry.

    with MetadataProxy("https://pypi.org/simple") as proxy:
        pip install --dry-run --index-url {proxy.url} ...

With `only={name: {versions}}` a page lists only those versions' files: for a dry-run whose constraints pin
exactly those versions this changes nothing pip could choose, and spares it evaluating the 136,000 files
that numpy, torch, grpcio & co. list (most of a dry-run's time on two CPU cores).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qlora-raft-workshop" / "wheel-metadata"


def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=cafile if cafile and Path(cafile).exists() else None)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str):
    try:
        from packaging.version import InvalidVersion, Version
    except ModuleNotFoundError:
        from pip._vendor.packaging.version import InvalidVersion, Version
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _file_version(filename: str):
    """The version in a wheel or sdist file name (None when it cannot be read)."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return _version(parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(ext):
            return _version(filename[: -len(ext)].rsplit("-", 1)[-1])
    return None


def wheel_metadata(wheel: Path) -> bytes:
    """The METADATA file of a wheel (the `<name>-<version>.dist-info/METADATA` member)."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if not names:
            raise ValueError(f"{wheel.name}: METADATA가 없는 wheel")
        return z.read(names[0])


class MetadataProxy:
    """Run the proxy in a background thread for the duration of a `with` block."""

    def __init__(self, upstream: str, cache: Path = CACHE, timeout: float = 120.0,
                 only: dict[str, set[str]] | None = None):
        self.upstream = upstream.rstrip("/") + "/"
        self.only = {_canonical(n): {_version(v) for v in vs} for n, vs in (only or {}).items()}
        self.pages: dict[str, bytes] = {}  # project -> page, for the proxy's lifetime (parallel pips)
        self.cache = Path(cache)
        self.timeout = timeout
        self.ctx = _ssl_context()
        self.files: dict[str, str] = {}  # sha256 -> upstream wheel URL
        self.lock = threading.Lock()
        self.downloads = 0  # wheels fetched to read their metadata (0 once the cache is warm)
        self.errors: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                try:
                    status, ctype, body = proxy.answer(self.path)
                except Exception as err:  # noqa: BLE001 - reported to pip as a 502 and kept for the caller
                    proxy.errors.append(f"{self.path}: {type(err).__name__}: {err}")
                    status, ctype, body = 502, "text/plain", str(err).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def __enter__(self) -> "MetadataProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _get(self, url: str, accept: str | None = None):
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        return urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path.startswith("/simple/"):
            return self.index_page(path[len("/simple/"):])
        if path.startswith("/metadata/"):
            sha = path.split("/")[2]
            return 200, "application/octet-stream", self.metadata(sha)
        return 404, "text/plain", b"not found"

    def index_page(self, project: str) -> tuple[int, str, bytes]:
        project = project.strip("/")
        with self.lock:
            if project in self.pages:
                return 200, JSON_TYPE, self.pages[project]
        try:
            with self._get(urllib.parse.urljoin(self.upstream, project), accept=JSON_TYPE) as resp:
                page_url, data = resp.geturl(), json.load(resp)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return 404, "text/plain", b"not found"
            raise
        want = self.only.get(_canonical(project))
        if want is not None:
            data["files"] = [f for f in data.get("files", []) if _file_version(f["filename"]) in want]
        for f in data.get("files", []):
            url = urllib.parse.urljoin(page_url, f["url"])
            sha = f.get("hashes", {}).get("sha256")
            if f["filename"].endswith(".whl") and sha and not (f.get("core-metadata") or f.get("dist-info-metadata")):
                with self.lock:
                    self.files[sha] = url.split("#", 1)[0]
                # pip fetches <file url>.metadata; the wheel URL itself is never fetched by a dry-run
                f["url"] = f"/metadata/{sha}/{f['filename']}"
                f["core-metadata"] = True
            else:
                f["url"] = url
        body = json.dumps(data).encode()
        with self.lock:
            self.pages[project] = body
        return 200, JSON_TYPE, body

    def metadata(self, sha: str) -> bytes:
        cached = self.cache / sha
        if cached.exists():
            return cached.read_bytes()
        with self.lock:
            url = self.files.get(sha)
        if url is None:
            raise KeyError(f"unknown file {sha}")
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            wheel = Path(tmp) / "w.whl"
            digest = hashlib.sha256()
            with self._get(url) as resp, wheel.open("wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise ValueError(f"{url}: sha256 mismatch")
            meta = wheel_metadata(wheel)
            part = Path(tmp) / "meta"
            part.write_bytes(meta)
            os.replace(part, cached)
        with self.lock:
            self.downloads += 1
        return meta


def main() -> None:
    import sys

    upstream = sys.argv[1] if len(sys.argv) > 1 else "https://pypi.org/simple"
    with MetadataProxy(upstream) as proxy:
        print(proxy.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
