"""Resumable, checksum-verified downloads of dataset archives from a list of mirrors.

Dataset URLs die (CycleGAN's horse2zebra.zip moved from people.eecs.berkeley.edu to
efrosgans.eecs.berkeley.edu and most scripts still point at the dead one), so an archive lists
several mirrors and `fetch` tries them in order, recording why each one failed. Archives are
large (horse2zebra.zip is 117 MB) and connections drop, so bytes go to `<name>.part` and an
interrupted transfer resumes with an HTTP Range request instead of starting over. Nothing is
trusted until its sha256 matches: a mirror serving a different file is skipped, and the final
name only ever holds a verified file (`os.replace` of the finished .part), so a file named
`<name>` is always complete. `extract_zip` unpacks an archive without letting members escape
the target folder and without leaving a half-extracted folder that looks complete.

Only the standard library is used (urllib, hashlib, zipfile).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ganlab.errors import UserError

log = logging.getLogger("ganlab")

USER_AGENT = "ganlab"
ATTEMPTS_PER_MIRROR = 3  # tries on one mirror while each dropped transfer still made progress
HASH_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Archive:
    """A file to download: its name on disk, where to get it (in order), and its checksum."""

    name: str  # file name, e.g. "horse2zebra.zip"
    mirrors: tuple[str, ...]
    sha256: str
    size: int | None = None  # bytes, when known

    def __post_init__(self) -> None:
        # a typo here would otherwise show up as "checksum mismatch" on every mirror
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits (got {self.sha256!r})")
        if not self.name or Path(self.name).name != self.name or self.name in (".", ".."):
            raise ValueError(f"archive name must be a plain file name (got {self.name!r})")
        if self.size is not None and self.size < 0:
            raise ValueError(f"{self.name}: size must be >= 0 (got {self.size})")


class DownloadError(Exception):
    """Every mirror failed; str() is ONE line listing each mirror's reason, e.g.
    'http://a/x.zip: HTTP 404; http://b/x.zip: checksum mismatch (got 1a2b3c4d...)'"""


# how one attempt on one mirror ended, when it did not end with the whole body in the .part
class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Dead(_Failed):
    """The mirror cannot serve the file now; the .part (if any) is still a good prefix."""


class _Corrupt(_Failed):
    """The .part is wrong (not a prefix of the file): it must be deleted."""


class _Dropped(_Failed):
    """The connection broke mid-body; the .part holds what arrived and can be resumed."""

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(reason)
        self.received = received


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to our Range request: the .part is already as long as (or longer than) the file."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (archives are too big to read at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, folder: Path, timeout: float = 10.0, chunk: int = 1 << 20,
          progress: Callable[[int, int | None], None] | None = None) -> Path:
    """folder/archive.name, verified: downloaded from the first mirror that serves it intact.

    An existing verified file is returned without touching the network; a file with the wrong
    checksum is deleted and downloaded again. Bytes go to `<name>.part`, which is resumed
    (HTTP Range) after a dropped connection, on the same mirror or the next one. `timeout` is
    per socket operation. `progress(bytes_so_far, total_or_None)` is called after each chunk.
    Raises DownloadError (one line, each mirror's reason) when no mirror delivered the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / archive.name
    if final.is_file():
        if sha256_of(final) == archive.sha256.lower():
            return final
        log.warning("%s does not match its sha256; downloading it again", final)
        final.unlink()
    part = folder / (archive.name + ".part")
    if _settle_part(part, archive):
        os.replace(part, final)
        return final

    failures: list[str] = []
    for url in archive.mirrors:
        reason = _from_mirror(url, archive, part, timeout, chunk, progress)
        if reason is None:
            os.replace(part, final)  # atomic: `final` never names a half file
            return final
        log.warning("%s: %s", url, reason)
        failures.append(f"{url}: {reason}")
    if not failures:
        raise DownloadError(f"{archive.name}: no mirrors to download it from")
    raise DownloadError("; ".join(failures))


def _settle_part(part: Path, archive: Archive) -> bool:
    """With a known size, decide a leftover .part locally: True when it is already the verified
    file; deleted when it cannot be a prefix of the file (as long or longer, but wrong)."""
    if archive.size is None or not part.is_file():
        return False
    have = part.stat().st_size
    if have < archive.size:
        return False
    if have == archive.size and sha256_of(part) == archive.sha256.lower():
        return True
    log.info("deleting %s: %d bytes that do not verify (expected %d)", part, have, archive.size)
    part.unlink()
    return False


def _from_mirror(url: str, archive: Archive, part: Path, timeout: float, chunk: int,
                 progress: Callable[[int, int | None], None] | None) -> str | None:
    """Complete and verify `part` from one mirror: None on success, else why it failed."""
    log.info("downloading %s from %s", archive.name, url)
    attempts = 0
    restarted = False
    while True:
        attempts += 1
        have = part.stat().st_size if part.is_file() else 0
        if have:
            log.info("resuming %s at %d bytes from %s", archive.name, have, url)
        try:
            _transfer(url, part, have, archive, timeout, chunk, progress)
        except _Dropped as drop:
            # retry only while retrying helps: a transfer that delivered nothing will not
            if drop.received > 0 and attempts < ATTEMPTS_PER_MIRROR:
                log.info("%s: connection dropped (%s); retrying", url, drop.reason)
                continue
            return f"connection dropped after {attempts} attempt(s) ({drop.reason})"
        except _Corrupt as bad:
            part.unlink(missing_ok=True)
            return bad.reason
        except _Dead as dead:
            return dead.reason
        except _RangeNotSatisfiable:
            problem = _check(part, archive)
            if problem is None:
                return None
            part.unlink(missing_ok=True)
            if restarted:
                return f"HTTP 416 to a resume, and the .part failed to verify: {problem}"
            # the .part is not the file (e.g. longer, from something else): start over, once
            log.info("%s: %s does not verify (%s); restarting from zero", url, part.name,
                     problem)
            restarted, attempts = True, 0
            continue
        problem = _check(part, archive)
        if problem is not None:
            part.unlink(missing_ok=True)  # bad bytes cannot be resumed from
        return problem


def _transfer(url: str, part: Path, have: int, archive: Archive, timeout: float, chunk: int,
              progress: Callable[[int, int | None], None] | None) -> None:
    """One request: append the rest of the file to `part` (or rewrite it on a 200).
    Returns when the body ended as long as announced; raises a _Failed otherwise."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        request = urllib.request.Request(url, headers=headers)  # ValueError: not a URL
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            raise _RangeNotSatisfiable from None
        raise _Dead(f"HTTP {exc.code}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # refused, DNS, timeout, reset before the response, malformed URL: a dead mirror
        raise _Dead(_reason(exc, timeout)) from None

    with response:
        length = _int_or_none(response.headers.get("Content-Length"))
        total = archive.size
        if response.status == 206 and have:
            start, whole = _content_range(response.headers.get("Content-Range"))
            if start is not None and start != have:
                # appending would misalign the file; the .part itself is still fine
                raise _Dead(f"asked for bytes from {have}, got Content-Range from {start}")
            mode = "ab"
            if total is None:
                total = whole if whole is not None else (
                    have + length if length is not None else None)
        elif response.status == 200:
            if have:
                log.info("%s ignores Range requests; downloading %s from the start",
                         url, archive.name)
            mode, have = "wb", 0  # the body is the whole file: truncate, never append it
            if total is None:
                total = length
        else:
            raise _Dead(f"unexpected HTTP {response.status}")

        received = 0
        with open(part, mode) as out:  # disk errors propagate: they are not the mirror's fault
            while True:
                try:
                    block = response.read(chunk)
                except (OSError, http.client.HTTPException) as exc:
                    # IncompleteRead, reset, timeout mid-body: keep what arrived
                    raise _Dropped(_reason(exc, timeout), received) from None
                if not block:
                    break
                out.write(block)
                received += len(block)
                if archive.size is not None and have + received > archive.size:
                    # a different (or endless) body: stop before filling the disk
                    raise _Corrupt(f"size mismatch (more than the expected {archive.size} "
                                   f"bytes)")
                if progress is not None:
                    progress(have + received, total)
    # http.client returns b"" rather than raising when a Content-Length body ends early
    if length is not None and received < length:
        raise _Dropped(f"got {received} of {length} bytes", received)


def _check(part: Path, archive: Archive) -> str | None:
    """None when `part` is the archive; otherwise the reason it is not."""
    size = part.stat().st_size
    if archive.size is not None and size != archive.size:
        return f"size mismatch (got {size} bytes, expected {archive.size})"
    got = sha256_of(part)
    if got != archive.sha256.lower():
        return f"checksum mismatch (got {got[:12]}...)"
    return None


def _reason(exc: BaseException, timeout: float) -> str:
    """A short one-line reason for a network error, for DownloadError's message."""
    inner: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(inner, socket.gaierror):
        text = f"DNS lookup failed ({inner.strerror or inner})"
    elif isinstance(inner, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        text = f"timed out after {timeout:g} s"
    elif isinstance(inner, http.client.IncompleteRead):
        text = f"IncompleteRead ({len(inner.partial)} bytes read)"
    elif isinstance(inner, BaseException):
        text = f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__
    else:
        text = str(inner)
    return " ".join(text.split())


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, full size) from 'bytes first-last/size'; None for what is missing."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None, None
    whole = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), whole


def extract_zip(path: Path, into: Path) -> None:
    """Extract safely every member of the zip at `path` into the folder `into`.

    A member that would land outside `into` (absolute path, `..`) is a UserError and nothing is
    extracted; so is a corrupt archive. Members are unpacked into the sibling folder
    `<into>.extracting` first and each top-level entry is then moved (renamed) into `into`, so an
    interrupted extraction leaves a scratch folder, never a half-filled entry inside `into`.
    An entry already in `into` with the same name is replaced.
    """
    path = Path(path)
    into = Path(into).resolve()
    staging = into.with_name(into.name + ".extracting")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted earlier extraction
    try:
        try:
            with zipfile.ZipFile(path) as archive:
                root = staging.resolve()
                for member in archive.infolist():
                    target = (root / member.filename).resolve()
                    if target != root and not target.is_relative_to(root):
                        raise UserError(f"{path} has a member {member.filename!r} that would be "
                                        f"extracted outside {into}; refusing to extract it")
                staging.mkdir(parents=True)
                archive.extractall(staging)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UserError(f"{path} is not a valid zip archive ({exc}); delete it and try "
                            f"again") from exc
        into.mkdir(parents=True, exist_ok=True)
        for entry in sorted(staging.iterdir()):
            dest = into / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(entry, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
