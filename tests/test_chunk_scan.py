"""GC's native chunk loops (`_chunkfs.c` via `chunk_scan.py`) against the generic backend
path and against a model of what they should report, on real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.datastore.backend import FilesystemBackend
from chunkyard.datastore.chunk_scan import ChunkScan, Survey
from chunkyard.errors import DatastoreError, NotFound

NOW = int(time.time())
MIN_ATIME = NOW - 86_400
OLDEST_WRITER = NOW - 3_600


class NonLocalBackend(FilesystemBackend):
    """The same files, but without a local path: `ChunkScan` takes the generic path."""

    def local_path(self, key: str) -> str | None:
        return None


hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
odd_names = st.sampled_from([
    "A" * 64, "a" * 63, "a" * 65, "a" * 64 + ".0.bad", "b" * 64 + ".using", "c" * 64 + ".sweep",
    "README", "g" * 64, "ab" * 32 + "\n",
])
entry = st.one_of(
    st.tuples(st.just("chunk"), hex64, st.integers(NOW - 3 * 86_400, NOW + 60),
              st.integers(0, 5000)),
    st.tuples(st.just("dir"), hex64, st.just(0), st.just(0)),
    st.tuples(st.just("symlink"), hex64, st.just(0), st.just(0)),
    st.tuples(st.just("odd"), odd_names, st.integers(NOW - 3 * 86_400, NOW), st.just(10)),
)


def make_prefix(root: Path, entries: list[tuple[str, str, int, int]]) -> tuple[Survey, set[str]]:
    """Write the entries into root/.chunks/0000; the survey a correct pass reports."""
    prefix = root / ".chunks" / "0000"
    prefix.mkdir(parents=True)
    expected = Survey()
    names: set[str] = set()
    for kind, name, atime, size in entries:
        if name in names:
            continue
        names.add(name)
        path = prefix / name
        if kind == "dir":
            path.mkdir()
        elif kind == "symlink":
            path.symlink_to("elsewhere")
        else:
            path.write_bytes(b"x" * size)
            os.utime(path, (atime, 1_000_000))
        if kind == "odd":
            expected.others.append(name)
        elif kind == "chunk":
            if atime < MIN_ATIME:
                expected.candidates.append(name)
            elif atime < OLDEST_WRITER:
                expected.pending_chunks += 1
                expected.pending_bytes += size
            else:
                expected.disk_chunks += 1
                expected.disk_bytes += size
    return expected, names


def normalised(s: Survey) -> Survey:
    return Survey(s.disk_chunks, s.disk_bytes, s.pending_chunks, s.pending_bytes,
                  sorted(s.candidates), sorted(s.others))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(entry, max_size=40))
def test_survey_native_and_generic_agree_with_the_model(tmp_path_factory: pytest.TempPathFactory,
                                                       entries: list[tuple[str, str, int, int]]
                                                       ) -> None:
    root = tmp_path_factory.mktemp("store")
    expected, _ = make_prefix(root, entries)
    for backend in (FilesystemBackend(str(root)), NonLocalBackend(str(root))):
        with ChunkScan.open(backend) as scan:
            got = scan.survey("0000", MIN_ATIME, OLDEST_WRITER)
        assert normalised(got) == normalised(expected), type(backend).__name__


def test_survey_of_a_missing_prefix_is_not_found(tmp_path: Path) -> None:
    (tmp_path / ".chunks").mkdir()
    for backend in (FilesystemBackend(str(tmp_path)), NonLocalBackend(str(tmp_path))):
        with ChunkScan.open(backend) as scan, pytest.raises(NotFound):
            scan.survey("0001", MIN_ATIME, OLDEST_WRITER)


@pytest.mark.parametrize("backend_type", [FilesystemBackend, NonLocalBackend])
def test_touch_sets_atime_keeps_mtime_and_reports_missing(tmp_path: Path,
                                                         backend_type: type) -> None:
    digests = [bytes([i]) * 32 for i in range(6)]
    for d in digests[:4]:
        path = tmp_path / ".chunks" / d.hex()[:4] / d.hex()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"chunk")
        os.utime(path, (1_000_000, 2_000_000))
    (tmp_path / ".chunks" / digests[5].hex()[:4]).write_bytes(b"a file, not a prefix dir")
    with ChunkScan.open(backend_type(str(tmp_path))) as scan:
        missing = scan.touch([*digests, digests[0]])
    assert missing == digests[4:]
    for d in digests[:4]:
        st_ = os.stat(tmp_path / ".chunks" / d.hex()[:4] / d.hex())
        assert st_.st_atime >= NOW - 5 and st_.st_mtime == 2_000_000


def test_touch_refuses_digests_of_the_wrong_size(tmp_path: Path) -> None:
    (tmp_path / ".chunks").mkdir()
    with ChunkScan.open(FilesystemBackend(str(tmp_path))) as scan, \
            pytest.raises(DatastoreError, match="32 bytes"):
        scan.touch([b"short"])


def test_touch_on_threads_reports_missing_in_order(tmp_path: Path) -> None:
    """A batch large enough to be split over threads: every present chunk touched, the
    missing ones reported in batch order, whichever thread met them."""
    from chunkyard.datastore import _chunkfs

    digests = [i.to_bytes(4, "big") * 8 for i in range(3 * 4096)]
    missing = set(range(0, len(digests), 997)) | {len(digests) - 1}
    for i, d in enumerate(digests):
        if i not in missing:
            path = tmp_path / d.hex()[:4] / d.hex()
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"")
            os.utime(path, (1_000_000, 2_000_000))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = _chunkfs.touch_atimes(fd, b"".join(digests), 3)
    finally:
        os.close(fd)
    assert got == sorted(missing)
    for i, d in enumerate(digests):
        if i not in missing:
            st_ = os.stat(tmp_path / d.hex()[:4] / d.hex())
            assert st_.st_atime >= NOW - 5 and st_.st_mtime == 2_000_000
