"""A remote log truncated or rotated under a running collector (and between two runs), against the simulated
cloud's real SSH server and a real redis-server: the change is detected (size below the stored offset, a new
inode, or tail's own notice), an ``ssh-log-rotated`` event is written, and the new file is stored from its
first byte as a new generation whose offsets continue after the old one's: unique and growing for readers."""

from __future__ import annotations

import os
import time

import pytest

from tests.fixtures.collector_rig import LOG, Rig


@pytest.fixture
def rig(sim, redis_server):
    # Liveness is not what these tests check: a dead-peer bound of 10 s (not the rig's 1.5 s) keeps a loaded
    # machine's stall of the built-in SSH server from forcing a reconnect that `sessions == 1` would count.
    r = Rig(sim, redis_server, keepalive_interval_s=2.0, keepalive_max_miss=5)
    yield r
    r.stop()


def _rotations(r: Rig) -> list[dict]:
    return [e.fields for e in r.events.read(count=1000) if e.kind == "ssh-log-rotated"]


def _offsets_unique_and_growing(r: Rig) -> None:
    offsets = [ln.offset for ln in r.logs.read(r.iid, LOG, 0, 10_000)]
    assert offsets == sorted(set(offsets))


def test_truncated_while_streaming_starts_a_new_generation(rig):
    rig.append(b"old 1\nold 2\n")
    rig.start()
    rig.wait_stored(12)
    with open(rig.log_path, "wb") as fh:  # truncate in place, then the new content
        fh.write(b"new 1\n")
    rig.wait_stored(12 + 6)
    rig.append(b"new 2\n")
    rig.wait_stored(12 + 12)
    assert rig.stored() == b"old 1\nold 2\nnew 1\nnew 2\n"
    gen, base, _inode = rig.logs.generation(rig.iid, LOG)
    assert (gen, base) == (1, 12)
    ev = _rotations(rig)
    assert len(ev) == 1 and ev[0]["offset"] == 12 and ev[0]["generation"] == 1
    _offsets_unique_and_growing(rig)
    assert rig.collector.result.sessions == 1  # handled inside the session, no reconnect


def test_rotated_by_rename_while_streaming_follows_the_new_file(rig):
    rig.append(b"gen0 a\ngen0 b\n")
    rig.start()
    rig.wait_stored(14)
    os.rename(rig.log_path, str(rig.log_path) + ".1")
    with open(rig.log_path, "wb") as fh:
        fh.write(b"gen1 a\ngen1 b\ngen1 c\n")  # already longer than the old offset: only the inode tells
    rig.wait_stored(14 + 21, timeout_s=20)
    assert rig.stored() == b"gen0 a\ngen0 b\ngen1 a\ngen1 b\ngen1 c\n"
    assert rig.logs.generation(rig.iid, LOG)[:2] == (1, 14)
    assert len(_rotations(rig)) == 1
    _offsets_unique_and_growing(rig)


def test_truncated_between_runs_is_detected_at_the_next_session(rig):
    rig.append(b"first run line 1\nfirst run line 2\n")
    rig.start()
    rig.wait_stored(34)
    rig.stop()
    with open(rig.log_path, "wb") as fh:
        fh.write(b"after\n")  # 6 bytes < stored offset 34
    rig.start()
    rig.wait_stored(34 + 6)
    assert rig.stored() == b"first run line 1\nfirst run line 2\nafter\n"
    assert rig.logs.generation(rig.iid, LOG)[:2] == (1, 34)
    assert [e["reason"] for e in _rotations(rig)] == ["size 6 < offset 34"]
    rig.stop()
    time.sleep(0.1)
    rig.append(b"more\n")  # a third run: same generation, resumes inside the new file
    rig.start()
    rig.wait_stored(34 + 11)
    assert rig.stored().endswith(b"after\nmore\n")
    assert len(_rotations(rig)) == 1
    _offsets_unique_and_growing(rig)


def test_repeated_truncation_while_lines_keep_coming_stores_every_generation_once(sim, redis_server):
    """Each truncation is followed at once by new lines (tail may send them before its notice, or, when the
    new content is as long as the old, never notice: the 1 s health check's head comparison does): the
    stored log is every generation's content, in order, each byte once."""
    rig = Rig(sim, redis_server, health_interval_s=1.0)
    expected = b""
    rig.start()
    for gen in range(6):
        block = b"".join(f"gen {gen} line {i} ".encode() + b"y" * (i % 7) + b"\n" for i in range(40))
        if gen:
            with open(rig.log_path, "wb") as fh:  # truncate and write the new generation's first bytes
                fh.write(block[:100])
            rig.append(block[100:])
        else:
            rig.append(block)
        expected += block
        rig.wait_stored(len(expected))
    rig.stop()
    assert rig.stored() == expected
    # usually 5; fewer when a truncation notice came late and the next generation's start was found first
    # (the bytes are still each stored once, in order: the old generation just holds two files' worth)
    assert 1 <= rig.logs.generation(rig.iid, LOG)[0] <= 5
    _offsets_unique_and_growing(rig)


def test_rotated_by_rename_keeps_what_the_writer_appends_to_the_old_file_after_the_switch(sim, redis_server):
    """logrotate renames the file and creates a new one; the writer keeps its old descriptor (until it is
    told to reopen) and appends 8 more lines over 2.4 s, well past the 1 s health check that sees the new
    inode, then a last line without its newline. The old file is drained before the switch: every byte of
    both files is stored once, in order."""
    rig = Rig(sim, redis_server, health_interval_s=1.0, keepalive_interval_s=2.0, keepalive_max_miss=5)
    try:
        rig.append(b"old 0\n")
        rig.start()
        rig.wait_stored(6)
        expected = b"old 0\n"
        with open(rig.log_path, "ab") as writer:  # the writer's descriptor survives the rename
            os.rename(rig.log_path, str(rig.log_path) + ".1")
            with open(rig.log_path, "wb") as fh:
                fh.write(b"new 0\n")
            for i in range(1, 9):
                time.sleep(0.3)
                line = f"old {i} written after the rename\n".encode()
                writer.write(line)
                writer.flush()
                expected += line
            writer.write(b"old last, never finished")
            writer.flush()
            expected += b"old last, never finished"
        rig.append(b"new 1\n")
        expected += b"new 0\nnew 1\n"
        rig.wait_stored(len(expected), timeout_s=30)
        assert rig.stored() == expected
        ev = _rotations(rig)
        assert len(ev) == 1 and ev[0]["offset"] == len(expected) - 12
        _offsets_unique_and_growing(rig)
        assert rig.collector.result.sessions == 1
    finally:
        rig.stop()
