"""Archive extraction that refuses members escaping the target folder (path traversal)."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from matchrepro.errors import MatchReproError


class ArchiveError(MatchReproError):
    """An archive is unreadable, malicious, or lacks the expected files."""


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def _check_members(archive: Path, root: Path) -> None:
    root = root.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if os.path.isabs(n) or not _inside(root, n):
                    raise ArchiveError(f"{archive}: member '{n}' would be written outside the target folder")
        return
    try:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if os.path.isabs(m.name) or not _inside(root, m.name):
                    raise ArchiveError(f"{archive}: member '{m.name}' would be written outside the target folder")
                if m.issym() or m.islnk():
                    link = m.linkname if m.islnk() else str(Path(m.name).parent / m.linkname)
                    if os.path.isabs(m.linkname) or not _inside(root, link):
                        raise ArchiveError(f"{archive}: link '{m.name}' -> '{m.linkname}' points outside the target folder")
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise ArchiveError(f"{archive}: member '{m.name}' is not a regular file or folder")
    except tarfile.TarError as e:
        raise ArchiveError(f"{archive}: not a readable tar or zip archive ({e})") from None


def extract(archive: str | os.PathLike, target: str | os.PathLike, expected: list[str] = ()) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) into ``target`` after checking every member.

    Extraction happens in a temporary folder beside ``target`` whose contents are moved in only
    when all succeeded and every path in ``expected`` (relative to ``target``) exists.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=target.parent))
    try:
        _check_members(archive, tmp)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        missing = [e for e in expected if not (tmp / e).exists() and not (target / e).exists()]
        if missing:
            raise ArchiveError(f"{archive}: expected {missing[0]!r} after extraction, not found")
        for item in tmp.iterdir():
            dest = target / item.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
