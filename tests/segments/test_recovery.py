"""Recovery on open: torn and corrupt tails, damaged indexes and checkpoints, crashes
in the middle of multi-step operations."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.batch import iter_batches
from segments.checkpoint import write_checkpoint
from segments.config import LogConfig
from segments.log import EPOCH_CHECKPOINT, LOG_START_CHECKPOINT, Log

from .helpers import make_batch

CONFIG = LogConfig(segment_bytes=1500, index_interval_bytes=200, fsync="never", segment_ms=None, retention_ms=None)
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(path, count=40, epochs=(1, 2, 3), config=CONFIG):
    """A log of `count` batches over several segments and epochs; returns its batches."""
    log = Log.open(str(path), config)
    for i in range(count):
        log.append(make_batch(1 + i % 5, ts=1000 + i, size=30, tag=i), epochs[i * len(epochs) // count])
    batches = [bytes(data) for _, data in log.batches(0)]
    log.close()
    return batches


def _contents(log):
    return [bytes(data) for _, data in log.batches(log.log_start_offset)]


def _segment_files(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".log"))


def _batch_spans(file_path):
    """(start, end) byte spans of the batches in a segment file."""
    data = open(file_path, "rb").read()
    spans, pos = [], 0
    for header, _ in iter_batches(data, allow_partial=True):
        spans.append((pos, pos + header.size))
        pos += header.size
    return spans


def _check_prefix(log, written, keep):
    """The log holds exactly the first `keep` written batches, and reads and epochs work."""
    got = _contents(log)
    assert got == written[:keep]
    end = log.next_offset
    if got:
        last = list(iter_batches(got[-1]))[0][0]
        assert end == last.next_offset
        assert log.term_at(end - 1) == last.leader_epoch
        assert log.read(last.base_offset, 1) == got[-1]
    assert log.term_at(end) is None
    # The recovered log takes appends again at its end.
    assert log.append(make_batch(2), 9) == (end, end + 1)
    assert log.term_at(end) == 9


@HYPOTHESIS
@given(st.data())
def test_torn_tail_at_any_byte(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("log")
    written = _write(path)
    active = _segment_files(path)[-1]
    spans = _batch_spans(active)
    size = spans[-1][1]
    cut = data.draw(st.integers(0, size - 1), label="cut")
    junk = data.draw(st.binary(max_size=80), label="junk")  # a torn write's leftovers
    with open(active, "r+b") as f:
        f.truncate(cut)
        f.seek(cut)
        f.write(junk)
    survivors = sum(1 for _, end in spans if end <= cut)
    before = len(written) - len(spans)
    log = Log.open(str(path), CONFIG)
    # Junk can never pass as a batch: it would need a valid CRC and the next offset.
    _check_prefix(log, written, before + survivors)
    log.close()


@HYPOTHESIS
@given(st.data())
def test_flipped_byte_in_active_segment(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("log")
    written = _write(path)
    active = _segment_files(path)[-1]
    spans = _batch_spans(active)
    pos = data.draw(st.integers(0, spans[-1][1] - 1), label="pos")
    flip = data.draw(st.integers(1, 255), label="flip")
    with open(active, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ flip]))
    hit = next(i for i, (start, end) in enumerate(spans) if start <= pos < end)
    rel = pos - spans[hit][0]
    before = len(written) - len(spans)
    log = Log.open(str(path), CONFIG)
    got = _contents(log)
    assert got[: before + hit] == written[: before + hit]  # everything before the damage is intact
    if 12 <= rel < 16:
        # The leader epoch is not covered by the CRC (the leader stamps it). The batch
        # is cut if its epoch now goes backwards; otherwise it survives with the new
        # epoch, and the batches after it are cut if theirs now go backwards.
        assert len(got) in (before + hit, before + hit + 1, len(written))
        if len(got) > before + hit:
            g, w = got[before + hit], written[before + hit]
            assert g[:12] == w[:12] and g[16:] == w[16:]
            assert got[before + hit + 1 :] == written[before + hit + 1 : len(got)]
    else:
        assert len(got) == before + hit
    log.close()


def test_fsynced_batches_survive_a_crash_mid_write(tmp_path):
    config = LogConfig(fsync="always", segment_bytes=2000, index_interval_bytes=100)
    log = Log.open(str(tmp_path), config)
    acked = [log.append(make_batch(3, tag=i), 1) for i in range(25)]
    written = _contents(log)
    # Crash: no close; a torn half batch is left at the end of the active segment.
    with open(_segment_files(tmp_path)[-1], "ab") as f:
        f.write(make_batch(3)[:40])
    again = Log.open(str(tmp_path), config)
    assert _contents(again) == written
    assert again.next_offset == acked[-1][1] + 1
    again.close()
    log.close()


def test_missing_and_damaged_indexes_are_rebuilt(tmp_path):
    written = _write(tmp_path)
    index_files = sorted(n for n in os.listdir(tmp_path) if n.endswith("index"))
    originals = {n: open(tmp_path / n, "rb").read() for n in index_files}
    assert any(originals.values())
    os.unlink(tmp_path / index_files[0])
    with open(tmp_path / index_files[2], "wb") as f:
        f.write(b"\xff" * 13)
    with open(tmp_path / index_files[3], "wb") as f:
        f.write(b"")
    log = Log.open(str(tmp_path), CONFIG)
    assert _contents(log) == written
    for header, data in log.batches(0):
        for offset in (header.base_offset, header.last_offset):
            assert log.read(offset, 1) == data
    log.close()
    assert {n: open(tmp_path / n, "rb").read() for n in index_files} == originals


def test_corrupt_sealed_segment_ends_the_log(tmp_path):
    written = _write(tmp_path)
    files = _segment_files(tmp_path)
    assert len(files) >= 4
    victim = files[1]
    spans = _batch_spans(victim)
    with open(victim, "r+b") as f:
        f.seek(spans[1][0] + 30)
        f.write(b"\x00\x01\x02")
    os.unlink(victim[:-4] + ".index")  # the damaged index forces a full scan
    before = sum(len(_batch_spans(p)) for p in files[:1])
    log = Log.open(str(tmp_path), CONFIG)
    assert log.segment_count == 2
    assert _segment_files(tmp_path) == files[:2]
    _check_prefix(log, written, before + 1)
    log.close()


def test_corrupt_tail_of_sealed_segment_is_found_without_index_damage(tmp_path):
    written = _write(tmp_path)
    files = _segment_files(tmp_path)
    spans = _batch_spans(files[0])
    with open(files[0], "r+b") as f:  # the last batch of the first segment
        f.seek(spans[-1][0] + 40)
        f.write(b"\xee")
    log = Log.open(str(tmp_path), CONFIG)
    _check_prefix(log, written, len(spans) - 1)
    log.close()


def test_missing_middle_segment_ends_the_log(tmp_path):
    written = _write(tmp_path)
    files = _segment_files(tmp_path)
    os.unlink(files[2])
    kept = sum(len(_batch_spans(p)) for p in files[:2])
    log = Log.open(str(tmp_path), CONFIG)
    assert log.segment_count == 2
    _check_prefix(log, written, kept)
    log.close()


def test_epoch_checkpoint_missing_garbled_or_stale(tmp_path):
    _write(tmp_path, epochs=(1, 4, 7))
    log = Log.open(str(tmp_path), CONFIG)
    expected = [log.term_at(o) for o in range(log.next_offset)]
    entries = log._epochs.entries()
    log.close()
    assert entries[0] == (1, 0) and [e for e, _ in entries] == [1, 4, 7]
    checkpoint = tmp_path / EPOCH_CHECKPOINT
    for damage in (
        lambda: os.unlink(checkpoint),
        lambda: checkpoint.write_text("0\n3\n1 0\ngarbage\n"),
        lambda: checkpoint.write_text("0\n1\n1 0\n"),  # disagrees with the active segment
        lambda: write_checkpoint(str(checkpoint), 0, entries + [(9, 10**6)]),  # crash before data
    ):
        damage()
        log = Log.open(str(tmp_path), CONFIG)
        assert [log.term_at(o) for o in range(log.next_offset)] == expected
        assert log._epochs.entries() == entries
        log.close()
        assert open(checkpoint).read().splitlines()[1] == "3"


def test_interrupted_reset_to_is_completed(tmp_path):
    _write(tmp_path)
    write_checkpoint(str(tmp_path / LOG_START_CHECKPOINT), 0, [(10_000,)])  # reset_to's first step
    log = Log.open(str(tmp_path), CONFIG)
    assert (log.log_start_offset, log.next_offset, log.segment_count, log.last_epoch) == (10_000, 10_000, 1, None)
    log.close()


def test_interrupted_delete_before_is_completed(tmp_path):
    written = _write(tmp_path)
    files = _segment_files(tmp_path)
    second = int(os.path.basename(files[2])[:20])
    write_checkpoint(str(tmp_path / LOG_START_CHECKPOINT), 0, [(second + 1,)])
    log = Log.open(str(tmp_path), CONFIG)
    assert log.log_start_offset == second + 1
    assert _segment_files(tmp_path) == files[2:]
    assert log.term_at(second) is None and log.term_at(second + 1) is not None
    assert _contents(log) == written[-len(_contents(log)) :]
    log.close()


def test_leftover_files_are_cleaned(tmp_path):
    _write(tmp_path)
    (tmp_path / (EPOCH_CHECKPOINT + ".tmp")).write_text("half")
    (tmp_path / f"{99999:020d}.index").write_bytes(b"\x00" * 8)
    (tmp_path / f"{99999:020d}.timeindex").write_bytes(b"")
    (tmp_path / "unrelated.txt").write_text("kept")
    (tmp_path / "raft-state.tmp").write_text("someone else's")
    log = Log.open(str(tmp_path), CONFIG)
    names = os.listdir(tmp_path)
    assert not any(n == EPOCH_CHECKPOINT + ".tmp" or n.startswith(f"{99999:020d}") for n in names)
    assert "unrelated.txt" in names and "raft-state.tmp" in names
    log.close()


def test_empty_active_segment_after_roll_crash(tmp_path):
    written = _write(tmp_path)
    log = Log.open(str(tmp_path), CONFIG)
    end = log.next_offset
    log.close()
    open(tmp_path / f"{end:020d}.log", "wb").close()  # the roll created the file, then a crash
    log = Log.open(str(tmp_path), CONFIG)
    assert _contents(log) == written
    assert log.append(make_batch(1), 3) == (end, end)
    log.close()


def test_epoch_going_back_across_segments_ends_the_log(tmp_path):
    written = _write(tmp_path, epochs=(2, 3, 4))
    files = _segment_files(tmp_path)
    with open(files[-1], "r+b") as f:  # the active segment's first batch claims epoch 1
        f.seek(12)
        f.write((1).to_bytes(4, "big"))
    kept = sum(len(_batch_spans(p)) for p in files[:-1])
    log = Log.open(str(tmp_path), CONFIG)
    _check_prefix(log, written, kept)
    log.close()
