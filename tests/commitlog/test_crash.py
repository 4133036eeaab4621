"""Crash and corruption: torn files, flipped bits, lost index files, interrupted compaction.

Rule checked everywhere: reopening keeps the longest valid prefix of the tail, and no corrupt entry is ever
returned as data (a read of a damaged older entry raises `CorruptEntryError` naming file and position).
"""

from __future__ import annotations

import pathlib
import shutil
import struct
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dledger.cli.main import main
from dledger.commitlog import CorruptEntryError, CorruptStoreError, Entry, SegmentedLog
from dledger.commitlog import recovery as recovery_mod
from dledger.commitlog.codec import HEADER_SIZE
from dledger.commitlog.verify import verify_store
from tests.commitlog.conftest import NoSyncOps, PowerLossOps, data_files, entries, index_files

WANT = entries(1, 61, term=1) + entries(61, 121, term=2)  # 120 entries of 5..44 bytes
CRASH = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


_TEMPLATES: dict[tuple[tuple[Entry, ...], int], pathlib.Path] = {}


def build(path: pathlib.Path, want: list[Entry] = WANT, segment_bytes: int = 1 << 20) -> None:
    """A closed store at `path` holding `want` (copied from a template built once per shape: no fsyncs)."""
    shutil.rmtree(path, ignore_errors=True)
    key = (tuple(want), segment_bytes)
    if key not in _TEMPLATES or not _TEMPLATES[key].exists():
        template = pathlib.Path(tempfile.mkdtemp(prefix="dledger-crash-template-"))
        with SegmentedLog.open(template, segment_bytes=segment_bytes, file_ops=NoSyncOps()) as log:
            for k in range(0, len(want), 9):
                log.append(want[k : k + 9])
        _TEMPLATES[key] = template
    shutil.copytree(_TEMPLATES[key], path)


@pytest.fixture(scope="module", autouse=True)
def _remove_templates() -> Iterator[None]:
    yield
    for template in _TEMPLATES.values():
        shutil.rmtree(template, ignore_errors=True)
    _TEMPLATES.clear()


def ends(want: list[Entry]) -> list[int]:
    """Byte offset just past each entry, in a single-segment store."""
    out, off = [], 0
    for e in want:
        off += HEADER_SIZE + len(e.data)
        out.append(off)
    return out


def reopen_and_check(path: pathlib.Path, expected_last: int, want: list[Entry] = WANT) -> None:
    with SegmentedLog.open(path, segment_bytes=1 << 20, file_ops=NoSyncOps()) as log:
        assert log.last_index == expected_last
        assert log.read(1, expected_last + 1) == want[:expected_last]
        log.append([Entry(expected_last + 1, 9, b"after the crash")])  # the log is usable again
    with SegmentedLog.open(path, segment_bytes=1 << 20, file_ops=NoSyncOps()) as log:  # and the repair was stable
        assert log.last_index == expected_last + 1
        assert log.read(1, expected_last + 2) == [
            *want[:expected_last],
            Entry(expected_last + 1, 9, b"after the crash"),
        ]
        assert log.recovery.problems == []
    assert verify_store(str(path)).clean


@CRASH
@given(cut=st.integers(0, ends(WANT)[-1]))
def test_torn_data_file_keeps_every_whole_entry(tmp_path: pathlib.Path, cut: int) -> None:
    build(tmp_path / "s")
    with open(data_files(tmp_path / "s")[0], "r+b") as f:
        f.truncate(cut)
    reopen_and_check(tmp_path / "s", sum(1 for end in ends(WANT) if end <= cut))


@CRASH
@given(cut=st.integers(0, 32 * len(WANT)))
def test_torn_index_file_is_rebuilt_from_data(tmp_path: pathlib.Path, cut: int) -> None:
    build(tmp_path / "s")
    with open(index_files(tmp_path / "s")[0], "r+b") as f:
        f.truncate(cut)
    reopen_and_check(tmp_path / "s", len(WANT))


def test_missing_index_file_is_rebuilt_from_data(tmp_path: pathlib.Path) -> None:
    build(tmp_path / "s", segment_bytes=600)
    files = index_files(tmp_path / "s")
    files[-1].unlink()  # the last segment's
    files[1].unlink()  # and an older one's
    with SegmentedLog.open(tmp_path / "s", segment_bytes=600) as log:
        assert log.read(1, 121) == WANT
        assert any("rebuilt" in p for p in log.recovery.problems)
    assert verify_store(str(tmp_path / "s")).clean


@CRASH
@given(bit=st.integers(0, 8 * ends(WANT)[-1] - 1))
def test_a_flipped_bit_in_the_data_tail_cuts_the_log_before_that_entry(tmp_path: pathlib.Path, bit: int) -> None:
    build(tmp_path / "s")  # 120 small entries: the whole log is within the verified tail
    path = data_files(tmp_path / "s")[0]
    raw = bytearray(path.read_bytes())
    raw[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(raw)
    damaged = next(k for k, end in enumerate(ends(WANT)) if bit // 8 < end)  # 0-based: entries before it are fine
    reopen_and_check(tmp_path / "s", damaged)


@CRASH
@given(bit=st.integers(0, 8 * 32 * len(WANT) - 1))
def test_a_flipped_bit_in_the_index_tail_loses_nothing(tmp_path: pathlib.Path, bit: int) -> None:
    build(tmp_path / "s")
    path = index_files(tmp_path / "s")[0]
    raw = bytearray(path.read_bytes())
    raw[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(raw)
    reopen_and_check(tmp_path / "s", len(WANT))


@pytest.fixture
def small_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the verified tail so that tests can damage entries that recovery does not look at."""
    monkeypatch.setattr(recovery_mod, "TAIL_RECORDS", 8)
    monkeypatch.setattr(recovery_mod, "TAIL_VERIFY_BYTES", 64)


@pytest.mark.usefixtures("small_tail")
def test_an_old_corrupt_entry_is_reported_on_read_and_by_verify(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    path = data_files(tmp_path)[0]
    at = ends(WANT)[8] + HEADER_SIZE + 2  # a body byte of entry 10
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(raw)
    with SegmentedLog.open(tmp_path) as log:
        assert log.last_index == 120  # open succeeds: the damage is not in the tail
        with pytest.raises(CorruptEntryError) as info:
            log.read(10, 11)
        assert info.value.segment == str(path)
        assert info.value.position == ends(WANT)[8]
        assert info.value.index == 10
        assert str(path) in str(info.value) and str(ends(WANT)[8]) in str(info.value)
        with pytest.raises(CorruptEntryError):
            log.read(1, 121)
        with pytest.raises(CorruptEntryError):
            log.read(5, 12, max_bytes=1 << 20)
        assert log.read(1, 10) == WANT[:9]
        assert log.read(11, 121) == WANT[10:]
    report = verify_store(str(tmp_path))
    assert [(p.file, p.position, p.index) for p in report.problems] == [(str(path), ends(WANT)[8], 10)]
    assert main(["log", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{path} @ byte {ends(WANT)[8]} entry 10" in out


@pytest.mark.usefixtures("small_tail")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["data", "index"]), seg=st.integers(0, 10), at=st.floats(0, 1), bit=st.integers(0, 7))
def test_no_corrupt_entry_is_ever_returned(tmp_path: pathlib.Path, which: str, seg: int, at: float, bit: int) -> None:
    """Flip one bit anywhere in a multi-segment store: every read returns the true entry or raises."""
    build(tmp_path / "s", segment_bytes=700)
    files = (data_files if which == "data" else index_files)(tmp_path / "s")
    path = files[seg % len(files)]
    raw = bytearray(path.read_bytes())
    pos = min(int(at * len(raw)), len(raw) - 1)
    raw[pos] ^= 1 << bit
    path.write_bytes(raw)
    try:
        log = SegmentedLog.open(tmp_path / "s", segment_bytes=700, file_ops=NoSyncOps())
    except CorruptStoreError:
        return  # an older segment that does not add up: refused, loudly
    with log:
        assert log.last_index <= len(WANT)
        for i in range(log.first_index, log.last_index + 1):
            try:
                got = log.read(i, i + 1)
            except CorruptEntryError:
                continue
            assert got == [WANT[i - 1]]
        try:
            every = log.read(log.first_index, log.last_index + 1)
        except CorruptEntryError:
            pass
        else:
            assert every == WANT[: log.last_index]


def test_interrupted_compaction_is_finished_by_recovery(tmp_path: pathlib.Path) -> None:
    store, saved = tmp_path / "s", tmp_path / "saved"
    build(store, segment_bytes=600)
    shutil.copytree(store, saved)
    with SegmentedLog.open(store, segment_bytes=600) as log:
        log.compact_before(60)
        first = log.first_index
    assert first > 1
    for sub in ("data", "index"):  # a crash after the meta write, before the deletes
        for p in (saved / sub).iterdir():
            if not (store / sub / p.name).exists():
                shutil.copy(p, store / sub / p.name)
    with SegmentedLog.open(store, segment_bytes=600) as log:
        assert log.first_index == first
        assert log.term_at(first - 1) == WANT[first - 2].term
        assert log.read(first, 121) == WANT[first - 1 :]
        assert log.recovery.segments_deleted
    assert verify_store(str(store)).clean


def test_a_damaged_meta_file_refuses_to_open(tmp_path: pathlib.Path) -> None:
    build(tmp_path, segment_bytes=600)
    with SegmentedLog.open(tmp_path, segment_bytes=600) as log:
        log.compact_before(60)
    meta = tmp_path / "meta"
    raw = bytearray(meta.read_bytes())
    raw[10] ^= 1
    meta.write_bytes(raw)
    with pytest.raises(CorruptStoreError, match="meta"):
        SegmentedLog.open(tmp_path, segment_bytes=600)


def test_a_gap_between_base_and_first_segment_refuses_to_open(tmp_path: pathlib.Path) -> None:
    build(tmp_path, segment_bytes=600)
    first = data_files(tmp_path)[0]
    first.unlink()
    (tmp_path / "index" / first.name).unlink()
    with pytest.raises(CorruptStoreError, match="starts at byte"):
        SegmentedLog.open(tmp_path, segment_bytes=600)


def test_an_empty_last_segment_from_a_crash_at_rollover_is_dropped(tmp_path: pathlib.Path) -> None:
    build(tmp_path, segment_bytes=600)
    last = data_files(tmp_path)[-1]
    end = int(last.name) + last.stat().st_size
    (tmp_path / "data" / f"{end:020d}").write_bytes(b"")
    (tmp_path / "index" / f"{end:020d}").write_bytes(struct.pack("<I", 7))
    reopen_and_check_multi = SegmentedLog.open(tmp_path, segment_bytes=600)
    with reopen_and_check_multi as log:
        assert log.read(1, 121) == WANT
        assert f"{end:020d}" in log.recovery.segments_deleted


def test_a_spliced_segment_breaks_the_chain(tmp_path: pathlib.Path) -> None:
    """Replace a middle segment by the same-shaped segment of another log: verify and boundary reads catch it."""
    other = [Entry(e.index, e.term, bytes(len(e.data))) for e in WANT]  # same sizes, different bodies
    build(tmp_path / "a", WANT, segment_bytes=600)
    build(tmp_path / "b", other, segment_bytes=600)
    middle, after = (p.name for p in data_files(tmp_path / "a")[2:4])
    for sub in ("data", "index"):
        shutil.copy(tmp_path / "b" / sub / middle, tmp_path / "a" / sub / middle)
    report = verify_store(str(tmp_path / "a"))
    # the chain breaks where the foreign segment starts and where the log's own segments resume
    assert [(p.file, p.position) for p in report.problems] == [
        (str(tmp_path / "a" / "data" / middle), 0),
        (str(tmp_path / "a" / "data" / after), 0),
    ]
    assert all("chain CRC" in p.reason for p in report.problems)
    with SegmentedLog.open(tmp_path / "a", segment_bytes=600) as log:
        first = next(s.first_index for s in log.segments() if s.name == middle)
        with pytest.raises(CorruptEntryError, match="chain"):
            log.read(first - 1, first + 1)


@pytest.mark.usefixtures("small_tail")
@pytest.mark.parametrize("where", ["index", "data"])
def test_term_at_reports_a_damaged_term_instead_of_returning_it(tmp_path: pathlib.Path, where: str) -> None:
    build(tmp_path)
    at = 10  # entry 11: its index record's term (offset 24) or its data header's term (offset 16)
    path, off = (
        (index_files(tmp_path)[0], 32 * at + 24)
        if where == "index"
        else (data_files(tmp_path)[0], ends(WANT)[at - 1] + 16)
    )
    raw = bytearray(path.read_bytes())
    raw[off] ^= 0x04
    path.write_bytes(raw)
    with SegmentedLog.open(tmp_path) as log, pytest.raises(CorruptEntryError, match="disagrees"):
        log.term_at(11)


def test_a_refused_open_deletes_nothing(tmp_path: pathlib.Path) -> None:
    """Review finding 10: recovery validates that a segment starts at the base before deleting those below it."""
    build(tmp_path, segment_bytes=600)
    with SegmentedLog.open(tmp_path, segment_bytes=600) as log:
        log.compact_before(60)
    names = [p.name for p in data_files(tmp_path)]
    first = data_files(tmp_path)[0]
    first.unlink()  # now nothing starts at the base
    (tmp_path / "index" / first.name).unlink()
    (tmp_path / "data" / f"{0:020d}").write_bytes(b"x")  # and a stale segment below the base
    with pytest.raises(CorruptStoreError, match="starts at byte"):
        SegmentedLog.open(tmp_path, segment_bytes=600)
    assert [p.name for p in data_files(tmp_path)] == [f"{0:020d}", *names[1:]]


@pytest.mark.usefixtures("small_tail")
def test_a_damaged_entry_before_the_checked_window_is_cut_not_kept(tmp_path: pathlib.Path) -> None:
    """Review finding 5: the headers of the entry before the re-checked window and of the window's first entry
    are lost (a zeroed page), and there is no checkpoint: recovery cuts before the first damaged entry and never
    keeps an entry with term or chain 0."""
    want = entries(1, 41, term=5, size=40)  # 88-byte entries: the 64-byte window is the last entry
    build(tmp_path, want)
    (tmp_path / "checkpoint").unlink()
    path = data_files(tmp_path)[0]
    raw = bytearray(path.read_bytes())
    at = ends(want)[37]  # entry 39 (before the window) and entry 40 (the window)
    raw[at : at + 88 + HEADER_SIZE] = bytes(88 + HEADER_SIZE)
    path.write_bytes(raw)
    with SegmentedLog.open(tmp_path, file_ops=NoSyncOps()) as log:
        assert log.last_index == 38
        assert log.term_at(38) == 5
        assert log.read(1, 39) == want[:38]
        with pytest.raises(ValueError, match="below the previous"):
            log.append([Entry(39, 1, b"a lower term")])
    assert verify_store(str(tmp_path)).clean


def test_a_damaged_index_size_is_reported_not_allocated(tmp_path: pathlib.Path) -> None:
    """Review finding 8: an index record whose size runs past the segment raises CorruptEntryError; the read
    never asks for ~4 GiB."""
    build(tmp_path, segment_bytes=600)
    path = index_files(tmp_path)[0]
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 32 * 3 + 12, 0xFFFFFFFF)  # entry 4's size field (not its segment's last)
    path.write_bytes(raw)
    asked: list[int] = []

    class Counting(NoSyncOps):
        def pread(self, fd: int, length: int, offset: int) -> bytes:
            asked.append(length)
            return super().pread(fd, length, offset)

    with SegmentedLog.open(tmp_path, segment_bytes=600, file_ops=Counting()) as log:
        for lo, hi in ((4, 5), (2, 5), (4, 8)):
            with pytest.raises(CorruptEntryError, match="bad index record"):
                log.read(lo, hi)
        with pytest.raises(CorruptEntryError):
            log.term_at(4)
        assert max(asked) < 1 << 20


def test_a_short_older_segment_refuses_to_open_as_a_corrupt_store(tmp_path: pathlib.Path) -> None:
    """Review finding 10: an older segment's data file that lost its end (index intact) is a CorruptStoreError
    from open, not a CorruptEntryError out of the cheap check."""
    build(tmp_path, segment_bytes=600)
    first = data_files(tmp_path)[0]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size - 5)
    with pytest.raises(CorruptStoreError, match="older segment"):
        SegmentedLog.open(tmp_path, segment_bytes=600)


_OP = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 9), st.integers(0, 150)),
    st.tuples(st.just("sync"), st.just(0), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 12), st.just(0)),
)


@CRASH
@given(flush=st.sampled_from(["sync", "async"]), ops_=st.lists(_OP, min_size=1, max_size=25))
def test_a_power_cut_keeps_every_durable_entry_and_nothing_else(
    tmp_path: pathlib.Path, flush: str, ops_: list[tuple[str, int, int]]
) -> None:
    """A power cut (`PowerLossOps`: exactly what was fsynced survives) after any sequence of appends, syncs and
    truncations across tiny segments: recovery keeps at least `durable_index` entries, only entries the log held
    at the cut (never one a truncation dropped), and opens cleanly."""
    store = tmp_path / "s"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(tmp_path / "crash", ignore_errors=True)
    pl = PowerLossOps(store)
    model: list[Entry] = []
    term = 1
    with SegmentedLog.open(store, segment_bytes=400, flush=flush, flush_interval_ms=600_000, file_ops=pl) as log:  # type: ignore[arg-type]
        for op, n, size in ops_:
            if op == "append":
                batch = [Entry(len(model) + 1 + k, term, bytes([(len(model) + k) % 251]) * size) for k in range(n)]
                log.append(batch)
                model += batch
            elif op == "sync":
                log.sync()
            else:
                keep = max(0, len(model) - n)
                log.truncate_after(keep)
                del model[keep:]
                term += 1
        durable = log.durable_index
        pl.crash_image(tmp_path / "crash")
    with SegmentedLog.open(tmp_path / "crash", segment_bytes=400, file_ops=NoSyncOps()) as log:
        assert durable <= log.last_index <= len(model)
        assert log.read(1, log.last_index + 1) == model[: log.last_index]
    assert verify_store(str(tmp_path / "crash")).clean
