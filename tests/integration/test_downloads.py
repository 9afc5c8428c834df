"""Downloads and extraction against a local HTTP server on 127.0.0.1 serving small archives in
the real formats: clean, resumed after a dropped connection, checksum mismatch, dead mirror,
Google Drive's confirmation page, and a malicious archive member."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from matchrepro.config import demo_settings, load_config
from matchrepro.datasets.benchmark import open_benchmark
from matchrepro.demo import builders
from matchrepro.download.extract import ArchiveError, extract
from matchrepro.download.http import DownloadError, Source, download
from tests.conftest import REPO


class Server:
    """Routes: path -> bytes. Extra behaviours: ``drop`` paths close the connection after half
    the body on requests without a Range header; ``dead`` paths answer 404; ``drive`` ids answer
    with a Drive-like confirmation form first."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop: set[str] = set()
        self.drive: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                if parts.path == "/uc" and q.get("id") in server.drive:
                    page = (f'<html><body><form id="download-form" action="/download" method="get">'
                            f'<input type="hidden" name="id" value="{q["id"]}">'
                            f'<input type="hidden" name="export" value="download">'
                            f'<input type="hidden" name="confirm" value="t">'
                            f'<input type="hidden" name="uuid" value="u-1"></form></body></html>').encode()
                    return self._send(200, page, "text/html; charset=utf-8")
                if parts.path == "/download" and q.get("confirm") == "t" and q.get("id") in server.drive:
                    return self._send(200, server.drive[q["id"]])
                body = server.files.get(parts.path)
                if body is None:
                    return self._send(404, b"not found", "text/plain")
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if parts.path in server.drop and not rng:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def _send(self, code, body, ctype="application/octet-stream"):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", ctype)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with Server() as s:
        yield s


def payload(n=300_000, seed=0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_clean_download_records_digest(server, tmp_path):
    data = payload()
    server.files["/w.pth"] = data
    dest = download(Source([server.url + "/w.pth"], tmp_path / "w.pth"), backoff=0)
    assert dest.read_bytes() == data
    assert (tmp_path / "w.pth.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "w.pth.part").exists()


def test_resume_after_dropped_connection(server, tmp_path):
    data = payload(seed=1)
    server.files["/big.bin"] = data
    server.drop.add("/big.bin")
    dest = download(Source([server.url + "/big.bin"], tmp_path / "big.bin",
                           sha256=hashlib.sha256(data).hexdigest()), backoff=0)
    assert dest.read_bytes() == data
    ranges = [r for p, r in server.log if p == "/big.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/x.bin"] = payload(seed=2)
    with pytest.raises(DownloadError, match=r"x\.bin: SHA-256 mismatch for x\.bin: got [0-9a-f]{64}, expected 0{64} \(from config\)"):
        download(Source([server.url + "/x.bin"], tmp_path / "x.bin", sha256="0" * 64), backoff=0)
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


def test_recorded_digest_refuses_a_changed_file(server, tmp_path):
    server.files["/x.bin"] = payload(seed=3)
    download(Source([server.url + "/x.bin"], tmp_path / "x.bin"), backoff=0)
    (tmp_path / "x.bin").unlink()
    server.files["/x.bin"] = payload(seed=4)  # the mirror now serves something else
    with pytest.raises(DownloadError, match=r"SHA-256 mismatch .* \(from .*x\.bin\.sha256\)"):
        download(Source([server.url + "/x.bin"], tmp_path / "x.bin"), backoff=0)
    assert not (tmp_path / "x.bin").exists()


def test_dead_first_mirror_then_live_second(server, tmp_path):
    data = payload(seed=5)
    server.files["/live/a.zip"] = data
    dest = download(Source([server.url + "/dead/a.zip", server.url + "/live/a.zip"], tmp_path / "a.zip"), backoff=0)
    assert dest.read_bytes() == data


def test_all_mirrors_dead_names_each_url(server, tmp_path):
    with pytest.raises(DownloadError) as e:
        download(Source([server.url + "/dead1", "http://127.0.0.1:9/nothing"], tmp_path / "f"), retries=1, backoff=0)
    msg = str(e.value)
    assert "\n" not in msg and "/dead1: HTTP 404" in msg and "127.0.0.1:9/nothing" in msg


def test_google_drive_confirmation_page(server, tmp_path):
    data = payload(seed=6)
    server.drive["FILEID123"] = data
    dest = download(Source([server.url + "/uc?id=FILEID123"], tmp_path / "p.pth", google_drive=True), backoff=0)
    assert dest.read_bytes() == data
    with pytest.raises(DownloadError, match="folder"):
        download(Source(["https://drive.google.com/drive/folders/abc"], tmp_path / "q", google_drive=True), backoff=0)


def _tar(members: dict[str, bytes], **links) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            t.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_traversal_member_is_refused(tmp_path, kind):
    a = tmp_path / f"evil.{kind}"
    if kind == "tar":
        a.write_bytes(_tar({"ok/file.txt": b"1", "../x": b"evil"}))
    else:
        with zipfile.ZipFile(a, "w") as z:
            z.writestr("ok/file.txt", "1")
            z.writestr("../x", "evil")
    out = tmp_path / "out" / "target"
    with pytest.raises(ArchiveError, match=r"member '\.\./x' would be written outside the target folder"):
        extract(a, out)
    assert not (tmp_path / "out" / "x").exists() and not (out / "ok").exists()


def test_symlink_out_of_target_is_refused(tmp_path):
    a = tmp_path / "link.tar.gz"
    a.write_bytes(_tar({"f": b"1"}, **{"evil": "../../etc/passwd"}))
    with pytest.raises(ArchiveError, match="points outside"):
        extract(a, tmp_path / "t")


def test_expected_files_checked(tmp_path):
    a = tmp_path / "a.tar.gz"
    a.write_bytes(_tar({"data/x.txt": b"1"}))
    with pytest.raises(ArchiveError, match="expected 'data/y.txt'"):
        extract(a, tmp_path / "t", expected=["data/y.txt"])
    extract(a, tmp_path / "t", expected=["data/x.txt"])
    assert (tmp_path / "t" / "data" / "x.txt").read_bytes() == b"1"


def hpatches_zip(tmp_path) -> bytes:
    """A zip of a small demo HPatches folder, laid out as the real archive."""
    src = tmp_path / "src"
    builders.build_hpatches(src, demo_settings(kind="hpatches", illumination=1, viewpoint=1, size=[96, 64]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(src).as_posix())
    return buf.getvalue()


def test_download_verb_fetches_an_hpatches_archive(server, tmp_path):
    """The `download` verb (the rule's command) on a real-format HPatches zip, then read it."""
    server.files["/hpatches-sequences-release.zip"] = hpatches_zip(tmp_path)
    cfg = load_config(REPO / "configs" / "paper.yaml")
    ds = cfg["datasets"]["hpatches"]
    ds["download"]["files"][0]["urls"] = [server.url + "/dead.zip", server.url + "/hpatches-sequences-release.zip"]
    ds["expected_sequences"] = {"illumination": 1, "viewpoint": 1}
    out = tmp_path / "datasets" / "hpatches"
    r = subprocess.run([sys.executable, "-m", "matchrepro", "download", "--spec", json.dumps({"dataset": ds}),
                        "--out", str(out), "--cache", str(tmp_path / "cache")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bench = open_benchmark(dict(ds, root=str(out)))
    assert len(bench.pairs) == 10
    assert (tmp_path / "cache" / "hpatches-sequences-release.zip.sha256").is_file()


def test_snakemake_download_rules_against_local_server(server, tmp_path):
    """The workflow's own rules: `download_dataset` (HPatches zip behind a dead mirror) and
    `fetch_weights` (a Google Drive file link), run by Snakemake in a scratch directory."""
    import yaml

    server.files["/hp.zip"] = hpatches_zip(tmp_path)
    weights = payload(50_000, seed=9)
    server.drive["W1"] = weights
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"]["hpatches"] = {
        "format": "hpatches", "source": "download",
        "download": {"files": [{"urls": [server.url + "/gone.zip", server.url + "/hp.zip"],
                                "dest": "hpatches-sequences-release.zip", "extract": True}]},
    }
    cfg["weights"] = {"tiny": {"urls": [server.url + "/uc?id=W1"], "google_drive": True,
                               "sha256": hashlib.sha256(weights).hexdigest()}}
    work = tmp_path / "work"
    work.mkdir()
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                        "--cores", "1", "resources/datasets/hpatches", "resources/weights/tiny.pth",
                        "--configfile", str(work / "cfg.yaml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "resources" / "weights" / "tiny.pth").read_bytes() == weights
    seqs = sorted(p.name for p in (work / "resources" / "datasets" / "hpatches" / "hpatches-sequences-release").iterdir())
    assert len(seqs) == 2
    assert (work / "resources" / "downloads" / "hpatches" / "hpatches-sequences-release.zip.sha256").is_file()
    assert "/gone.zip: HTTP 404" not in r.stderr  # a dead mirror is not an error when another works
