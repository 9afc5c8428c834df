"""Resumable HTTP(S) downloads with mirrors, SHA-256 verification and atomic renames.

A file is fetched into ``<dest>.part`` (resumed with an HTTP ``Range`` request after an
interruption), hashed, and renamed onto ``dest`` only when complete and verified. Mirrors are
tried in order; the error names every URL and why it failed. Where no checksum is published,
the digest of the first download is recorded in ``<dest>.sha256`` and a later download of
the same file that differs is refused.

Google Drive file links (``drive.google.com/uc?id=...``, ``/file/d/<id>``) go through the
confirmation step that Drive shows for large files (a form with a ``confirm`` token, or the
older ``download_warning`` cookie). Folder links cannot be fetched without Google's API; they
give an error that says which file to place where.
"""

from __future__ import annotations

import hashlib
import html.parser
import http.cookiejar
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from matchrepro.errors import MatchReproError

CHUNK = 1 << 20
USER_AGENT = "matchrepro-downloader/0.1"


class DownloadError(MatchReproError):
    """A file could not be fetched or verified."""


@dataclass
class Source:
    """One file to fetch: mirrors in order, destination, optional SHA-256 (hex)."""

    urls: list[str]
    dest: Path
    sha256: str | None = None
    google_drive: bool = False


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def expected_digest(src: Source) -> tuple[str | None, str]:
    """The digest to check against and where it comes from (config or first download)."""
    if src.sha256:
        return src.sha256.lower(), "config"
    record = Path(f"{src.dest}.sha256")
    if record.is_file():
        return record.read_text().split()[0].lower(), str(record)
    return None, ""


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


class _FormParser(html.parser.HTMLParser):
    """Finds Drive's download form (action + hidden inputs) and any ``confirm=`` link."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.confirm_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("id") == "download-form" or self.action is None):
            self.action, self._in_form = a.get("action"), True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in (a.get("href") or ""):
            self.confirm_href = a["href"]

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def drive_file_id(url: str) -> str:
    """The file id of a Google Drive link; folder links are refused with advice."""
    if "/folders/" in url:
        raise DownloadError(
            f"{url}: a Google Drive *folder* cannot be fetched automatically; download the file "
            "from it by hand and put it at the destination named below (or give a file link)"
        )
    m = re.search(r"/file/d/([\w-]+)", url) or re.search(r"[?&]id=([\w-]+)", url)
    if not m:
        raise DownloadError(f"{url}: not a Google Drive file link (no file id)")
    return m.group(1)


def _drive_request_url(url: str) -> str:
    """``uc?export=download&id=`` form of a Drive link, on the link's own host."""
    fid = drive_file_id(url)
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/uc", f"export=download&id={fid}", ""))


def _resolve_drive(opener, url: str, timeout: float) -> str:
    """Follow Drive's virus-scan confirmation page to the URL of the file itself."""
    req_url = _drive_request_url(url)
    req = urllib.request.Request(req_url, headers={"User-Agent": USER_AGENT})
    with opener.open(req, timeout=timeout) as r:
        ctype = r.headers.get("Content-Type", "")
        if "text/html" not in ctype:
            return r.geturl()
        page = r.read(2_000_000).decode("utf-8", "replace")
        final = r.geturl()
    p = _FormParser()
    p.feed(page)
    if p.action and "confirm" in p.fields:
        action = urllib.parse.urljoin(final, p.action)
        return f"{action}?{urllib.parse.urlencode(p.fields)}"
    if p.confirm_href:
        return urllib.parse.urljoin(final, p.confirm_href.replace("&amp;", "&"))
    m = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if m:
        return f"{req_url}&confirm={m.group(1)}"
    for handler in opener.handlers:
        jar = getattr(handler, "cookiejar", None)
        for c in jar or []:
            if c.name.startswith("download_warning"):
                return f"{req_url}&confirm={c.value}"
    if "quota" in page.lower():
        raise DownloadError(f"{url}: Google Drive says the download quota is exceeded; try later")
    raise DownloadError(f"{url}: Google Drive returned a page without a download link")


def _fetch_once(opener, url: str, part: Path, timeout: float, desc: str) -> None:
    """Append the missing bytes of ``url`` to ``part`` (resuming where it stopped)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        r = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part is already complete
            return
        raise
    with r:
        if have and r.status != 206:  # server ignored the range: start again
            have = 0
        total = r.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                          desc=desc, leave=False, mininterval=1.0) as bar:
            while True:
                block = r.read(CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")


def download(src: Source, timeout: float = 60.0, retries: int = 3, backoff: float = 1.0) -> Path:
    """Fetch ``src`` to ``src.dest`` (see module docstring). Returns the destination.

    Raises:
        DownloadError: one line naming each URL tried and its failure, or the checksum
            mismatch (the bad file is deleted, nothing is left under the final name).
    """
    dest = Path(src.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    want, want_from = expected_digest(src)
    if dest.is_file():
        if want is None or sha256_of(dest) == want:
            return dest
        dest.unlink()
    part = Path(f"{dest}.part")
    failures = []
    for url in src.urls:
        if _fetch_with_retries(url, src.google_drive, part, timeout, retries, backoff, failures):
            got = sha256_of(part)
            if want is not None and got != want:
                part.unlink()
                raise DownloadError(
                    f"{url}: SHA-256 mismatch for {dest.name}: got {got}, expected {want} (from {want_from})"
                )
            os.replace(part, dest)
            if want is None:
                Path(f"{dest}.sha256").write_text(f"{got}  {dest.name}\n")
            return dest
    raise DownloadError(f"cannot download {dest.name}: " + "; ".join(failures))


def _fetch_with_retries(url, google_drive, part, timeout, retries, backoff, failures) -> bool:
    """Try one mirror up to ``retries`` times, resuming the partial file; False if it failed.
    A partial file is kept (a later attempt or run resumes it; the checksum guards it)."""
    opener = _opener()
    for attempt in range(retries):
        try:
            target = _resolve_drive(opener, url, timeout) if google_drive else url
            _fetch_once(opener, target, part, timeout, part.name[: -len(".part")])
            return True
        except DownloadError as e:
            failures.append(str(e))
            return False
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
            if e.code < 500 and e.code != 429:
                return False
        except (urllib.error.URLError, OSError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
        time.sleep(backoff * (attempt + 1))
    return False
