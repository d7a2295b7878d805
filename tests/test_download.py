"""ganlab.data.download against a local HTTP server: dead and corrupt mirrors, dropped
connections resumed with Range requests, servers that ignore ranges, safe zip extraction."""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import random
import socket
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ganlab.data.download import Archive, DownloadError, extract_zip, fetch, sha256_of
from ganlab.errors import UserError

NAME = "horse2zebra.zip"
CHUNK = 8192
DROP_AFTER = 30_000  # bytes a dropping response sends before it closes (not a CHUNK multiple)


def _make_zip() -> bytes:
    rng = random.Random(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: stays ~100 KB
        zf.writestr("horse2zebra/trainA/a.png", rng.randbytes(60_000))
        zf.writestr("horse2zebra/trainB/b.png", rng.randbytes(40_000))
        zf.writestr("horse2zebra/README.txt", b"horses and zebras\n")
    return buf.getvalue()


PAYLOAD = _make_zip()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
# same length, different bytes: only the checksum can tell
CORRUPT = bytes(b ^ 0xFF for b in PAYLOAD[:1000]) + PAYLOAD[1000:]


class _Handler(BaseHTTPRequestHandler):
    """GET /<mode>/<name>. Modes: good (Range -> 206), norange (always 200), missing (404),
    drop (first request to the path sends DROP_AFTER bytes of a longer declared body, then
    closes), flaky (every response does that), corrupt (CORRUPT instead of PAYLOAD)."""

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        asked = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, asked))
            state.counts[self.path] += 1
            count = state.counts[self.path]
        mode, _, name = urlsplit(self.path).path.strip("/").partition("/")
        if mode == "missing" or name != NAME:
            self.send_error(404)
            return
        body = CORRUPT if mode == "corrupt" else PAYLOAD
        start = 0
        if asked and mode != "norange":
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))  # always the full remaining length
        self.end_headers()
        if (mode == "drop" and count == 1) or mode == "flaky":
            self.wfile.write(rest[:DROP_AFTER])
            self.close_connection = True
            return
        self.wfile.write(rest)


class _State:
    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []
        self.counts: Counter[str] = Counter()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/{NAME}"

    def ranges(self, mode: str) -> list[str | None]:
        return [r for path, r in self.requests if path == f"/{mode}/{NAME}"]


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = _State(httpd.server_address[1])
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a port nothing listens on: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{NAME}"


def _archive(*mirrors: str, size: int | None = len(PAYLOAD)) -> Archive:
    return Archive(NAME, tuple(mirrors), SHA, size)


def _fetch(archive: Archive, folder: Path, **kwargs) -> Path:
    return fetch(archive, folder, timeout=2, chunk=CHUNK, **kwargs)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_from_a_good_mirror(server, tmp_path):
    calls: list[tuple[int, int | None]] = []
    path = _fetch(_archive(server.url("good")), tmp_path,
                  progress=lambda done, total: calls.append((done, total)))
    assert path == tmp_path / NAME
    assert path.read_bytes() == PAYLOAD
    assert sha256_of(path) == SHA
    assert _leftovers(tmp_path) == [NAME]  # no .part left
    assert server.requests == [(f"/good/{NAME}", None)]
    done = [d for d, _ in calls]
    assert len(calls) >= len(PAYLOAD) // CHUNK
    assert all(a < b for a, b in itertools.pairwise(done))
    assert done[-1] == len(PAYLOAD)
    assert {t for _, t in calls} == {len(PAYLOAD)}


def test_progress_total_from_headers_when_size_unknown(server, tmp_path):
    calls: list[tuple[int, int | None]] = []
    _fetch(_archive(server.url("good"), size=None), tmp_path,
           progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_dead_mirrors_are_skipped(server, tmp_path, closed_port_url):
    archive = _archive(closed_port_url, server.url("missing"), server.url("good"))
    path = _fetch(archive, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.counts[f"/missing/{NAME}"] == 1
    assert server.counts[f"/good/{NAME}"] == 1
    assert _leftovers(tmp_path) == [NAME]


def test_checksum_mismatch_moves_to_next_mirror(server, tmp_path):
    path = _fetch(_archive(server.url("corrupt"), server.url("good")), tmp_path)
    assert path.read_bytes() == PAYLOAD
    # the corrupt bytes were deleted, not resumed from: mirror 2 got no Range header
    assert server.ranges("good") == [None]


def test_all_mirrors_corrupt_raises_and_leaves_nothing(server, tmp_path):
    urls = (server.url("corrupt"), server.url("corrupt") + "?mirror=2")
    with pytest.raises(DownloadError) as info:
        _fetch(_archive(*urls), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for url in urls:
        assert f"{url}: checksum mismatch (got " in message
    assert hashlib.sha256(CORRUPT).hexdigest()[:12] in message
    assert _leftovers(tmp_path) == []  # neither the final name nor a .part


def test_dropped_transfer_is_resumed_with_range(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ganlab")
    path = _fetch(_archive(server.url("drop")), tmp_path)
    assert server.ranges("drop") == [None, f"bytes={DROP_AFTER}-"]
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == [NAME]
    assert f"resuming {NAME} at {DROP_AFTER} bytes" in caplog.text


def test_flaky_mirror_gives_up_after_three_attempts_and_next_mirror_resumes(server, tmp_path):
    path = _fetch(_archive(server.url("flaky"), server.url("good")), tmp_path)
    assert server.ranges("flaky") == [None, f"bytes={DROP_AFTER}-", f"bytes={2 * DROP_AFTER}-"]
    # the .part survives the switch: the next mirror only sends the rest
    assert server.ranges("good") == [f"bytes={3 * DROP_AFTER}-"]
    assert path.read_bytes() == PAYLOAD


def test_flaky_only_mirror_keeps_the_part(server, tmp_path):
    with pytest.raises(DownloadError, match="connection dropped after 3 attempt"):
        _fetch(_archive(server.url("flaky")), tmp_path)
    assert _leftovers(tmp_path) == [NAME + ".part"]  # resumable later, never named NAME
    assert (tmp_path / (NAME + ".part")).read_bytes() == PAYLOAD[:3 * DROP_AFTER]


@pytest.mark.parametrize("size", [len(PAYLOAD), None])
def test_existing_part_is_resumed(server, tmp_path, size):
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD[:12_345])
    path = _fetch(_archive(server.url("good"), size=size), tmp_path)
    assert server.ranges("good") == ["bytes=12345-"]
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == [NAME]


def test_existing_part_restarts_when_server_ignores_ranges(server, tmp_path):
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD[:12_345])
    path = _fetch(_archive(server.url("norange")), tmp_path)
    assert server.ranges("norange") == ["bytes=12345-"]  # asked, got a 200 with the whole file
    assert path.read_bytes() == PAYLOAD  # truncated and rewritten, not appended
    assert _leftovers(tmp_path) == [NAME]


def test_complete_part_answered_416_is_verified(server, tmp_path):
    # size unknown, so only the server can say the .part is complete
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD)
    path = _fetch(_archive(server.url("good"), size=None), tmp_path)
    assert server.ranges("good") == [f"bytes={len(PAYLOAD)}-"]
    assert path.read_bytes() == PAYLOAD


def test_oversized_bad_part_answered_416_restarts_once(server, tmp_path):
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD + b"junk")
    path = _fetch(_archive(server.url("good"), size=None), tmp_path)
    assert server.ranges("good") == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert path.read_bytes() == PAYLOAD


def test_verified_file_is_returned_without_a_request(server, tmp_path):
    (tmp_path / NAME).write_bytes(PAYLOAD)
    assert _fetch(_archive(server.url("good")), tmp_path) == tmp_path / NAME
    # a complete verified .part (known size) needs no request either
    (tmp_path / NAME).unlink()
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD)
    assert _fetch(_archive(server.url("good")), tmp_path).read_bytes() == PAYLOAD
    assert server.requests == []


def test_mismatching_file_is_downloaded_again(server, tmp_path):
    (tmp_path / NAME).write_bytes(CORRUPT)
    path = _fetch(_archive(server.url("good")), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("good") == [None]


def test_all_mirrors_dead_is_one_line_listing_each(server, tmp_path, closed_port_url):
    urls = (server.url("missing"), closed_port_url, "http://127.0.0.1:1/nothing/here.zip")
    with pytest.raises(DownloadError) as info:
        _fetch(_archive(*urls), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.count("; ") == len(urls) - 1
    assert message.startswith(f"{urls[0]}: HTTP 404; {urls[1]}: connection refused; ")
    assert urls[2] in message
    assert _leftovers(tmp_path) == []


def test_archive_rejects_bad_checksum_and_name():
    with pytest.raises(ValueError, match="sha256"):
        Archive(NAME, ("http://x",), "abc")
    with pytest.raises(ValueError, match="plain file name"):
        Archive("../x.zip", ("http://x",), SHA)


def _zip_with(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    return buf.getvalue()


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_extract_zip(tmp_path):
    archive = tmp_path / NAME
    archive.write_bytes(PAYLOAD)
    into = tmp_path / "data"
    (tmp_path / "data.extracting" / "horse2zebra").mkdir(parents=True)  # an interrupted run's
    (tmp_path / "data.extracting" / "horse2zebra" / "stale.png").write_bytes(b"old")
    extract_zip(archive, into)
    with zipfile.ZipFile(io.BytesIO(PAYLOAD)) as zf:
        for name in zf.namelist():
            assert (into / name).read_bytes() == zf.read(name)
    assert _all_files(into) == sorted(["horse2zebra", "horse2zebra/README.txt",
                                       "horse2zebra/trainA", "horse2zebra/trainA/a.png",
                                       "horse2zebra/trainB", "horse2zebra/trainB/b.png"])
    assert not (tmp_path / "data.extracting").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "horse2zebra/../../evil.txt", "ABSOLUTE"])
def test_extract_zip_refuses_members_outside(tmp_path, evil):
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "abs_evil.txt")
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip_with(["horse2zebra/ok.txt", evil]))
    into = tmp_path / "out" / "data"
    with pytest.raises(UserError, match="outside"):
        extract_zip(archive, into)
    assert _all_files(tmp_path) == ["evil.zip"]  # nothing extracted anywhere, not even ok.txt


def test_extract_zip_corrupt_is_user_error(tmp_path):
    archive = tmp_path / NAME
    archive.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])  # a truncated download
    with pytest.raises(UserError, match=r"is not a valid zip archive .*delete it and try again"):
        extract_zip(archive, tmp_path / "data")
    assert _all_files(tmp_path) == [NAME]
