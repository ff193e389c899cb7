"""The treatment journal: fsync per entry, checksummed lines, torn tail tolerated, unfinished found."""
from __future__ import annotations

import json
import os

import pytest

from orconsole.journal import (BEAM_OFF, BEAM_ON, Journal, JournalWriteError, read_journal)
from simulators.clock import ManualClock


class CountingFsync:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise OSError(28, "No space left on device")
        os.fsync(fd)


def open_treatment(journal: Journal, tid: str = "T-1") -> None:
    journal.treatment_opened(tid, plan_id="PLAN-017-1", plan_hash="ab" * 32, preset_s=1379.3,
                             prescription_dose_gy=20.0, dose_to_deliver_gy=20.0, applicator_cm=3.0,
                             source_serial="XRS-0042", delivery_type="TREATMENT")


def test_every_entry_is_fsynced_before_append_returns(tmp_path):
    fsync = CountingFsync()
    with Journal(tmp_path / "j.jsonl", clock=ManualClock(), fsync=fsync) as journal:
        after_open = fsync.calls           # the directory entry of a new file is synced too
        assert after_open >= 1
        open_treatment(journal)
        journal.progress("T-1", elapsed_s=1.0, primary_dose_gy=0.01, irm_dose_gy=0.01, beam_on=True)
        assert fsync.calls == after_open + 2
    assert len(read_journal(tmp_path / "j.jsonl").entries) == 2


def test_lines_are_json_with_a_checksum_and_sequence(tmp_path):
    clock = ManualClock(42.0)
    with Journal(tmp_path / "j.jsonl", clock=clock) as journal:
        open_treatment(journal)
        clock.advance(1.0)
        journal.append(BEAM_ON, "T-1")
    lines = (tmp_path / "j.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [1, 2]
    assert [e["mono_s"] for e in entries] == [42.0, 43.0]
    assert all(len(e["sum"]) == 16 for e in entries)


def test_sequence_continues_after_reopening(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal)
    with Journal(path, clock=ManualClock()) as journal:
        assert journal.append(BEAM_ON, "T-1")["seq"] == 2


def test_an_altered_line_is_reported_not_trusted(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal)
        journal.progress("T-1", elapsed_s=100.0, primary_dose_gy=1.45, irm_dose_gy=1.44, beam_on=True)
        journal.append(BEAM_OFF, "T-1", reason="pause")
    text = path.read_text(encoding="utf-8").replace('"elapsed_s":100.0', '"elapsed_s":10.0')
    path.write_text(text, encoding="utf-8")
    readout = read_journal(path)
    assert len(readout.entries) == 2 and not readout.torn_tail
    assert readout.problems[0].line_number == 2 and "checksum" in readout.problems[0].reason


def test_unfinished_treatment_is_found_with_its_last_progress(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal, "T-0")
        journal.treatment_closed("T-0", status="completed", elapsed_s=1379.3, primary_dose_gy=20.0,
                                 irm_dose_gy=19.98, reason="preset time reached")
        open_treatment(journal, "T-1")
        journal.append(BEAM_ON, "T-1")
        journal.progress("T-1", elapsed_s=611.0, primary_dose_gy=8.85, irm_dose_gy=8.84, beam_on=True)
        journal.progress("T-1", elapsed_s=612.0, primary_dose_gy=8.87, irm_dose_gy=8.86, beam_on=True)
    readout = read_journal(path)
    (unfinished,) = readout.unfinished
    assert unfinished.treatment_id == "T-1" and unfinished.plan_id == "PLAN-017-1"
    assert unfinished.elapsed_s == 612.0 and unfinished.irm_dose_gy == 8.86 and unfinished.preset_s == 1379.3
    assert unfinished.beam_was_on
    assert "unfinished" in readout.report and "T-1" in readout.report


def test_a_closed_treatment_is_not_unfinished(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal)
        journal.append(BEAM_OFF, "T-1", reason="stop")
        journal.treatment_closed("T-1", status="terminated", elapsed_s=5.0, primary_dose_gy=0.07,
                                 irm_dose_gy=0.07, reason="operator stop")
    assert read_journal(path).unfinished == ()


@pytest.mark.parametrize("cut", [1, 10, 30, -2])
def test_a_torn_last_line_is_tolerated_and_reported(tmp_path, cut):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal)
        journal.progress("T-1", elapsed_s=3.0, primary_dose_gy=0.04, irm_dose_gy=0.04, beam_on=True)
        journal.progress("T-1", elapsed_s=4.0, primary_dose_gy=0.06, irm_dose_gy=0.06, beam_on=True)
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_start + cut] if cut > 0 else data[:cut])   # crash mid-write
    readout = read_journal(path)
    assert readout.torn_tail
    assert len(readout.entries) == 2
    assert readout.unfinished[0].elapsed_s == 3.0
    assert "torn" in readout.report


def test_appending_after_a_torn_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        open_treatment(journal)
    with open(path, "ab") as fh:
        fh.write(b'{"v":1,"seq":2,"kind":"prog')
    with Journal(path, clock=ManualClock()) as journal:
        journal.append(BEAM_OFF, "T-1", reason="recovered")
    readout = read_journal(path)
    assert [e["kind"] for e in readout.entries] == ["treatment_opened", "beam_off"]
    assert not readout.torn_tail and len(readout.problems) == 1


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\x00\xff\xfe garbage", b"[1,2,3]\n", b'{"sum":"x"}\n',
                                     b"not json at all\n" * 3])
def test_reading_garbage_never_crashes(tmp_path, content):
    path = tmp_path / "j.jsonl"
    path.write_bytes(content)
    readout = read_journal(path)
    assert readout.entries == () and readout.unfinished == ()


def test_missing_journal_reads_as_empty(tmp_path):
    readout = read_journal(tmp_path / "none.jsonl")
    assert readout.entries == () and not readout.torn_tail


def test_write_failure_raises_with_an_actionable_message(tmp_path):
    fsync = CountingFsync(fail_after=2)      # directory sync + first entry succeed
    journal = Journal(tmp_path / "j.jsonl", clock=ManualClock(), fsync=fsync)
    open_treatment(journal)
    with pytest.raises(JournalWriteError) as info:
        journal.progress("T-1", elapsed_s=1.0, primary_dose_gy=0.0, irm_dose_gy=0.0, beam_on=True)
    assert "No space left" in info.value.message and "free disk space" in info.value.message
    journal.close()


def test_unwritable_directory_raises_on_open(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalWriteError, match="cannot open"):
        Journal(blocker / "j.jsonl", clock=ManualClock())


def test_writing_to_a_closed_journal_raises(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", clock=ManualClock())
    journal.close()
    with pytest.raises(JournalWriteError, match="closed"):
        open_treatment(journal)


def test_unencodable_entry_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, clock=ManualClock()) as journal:
        with pytest.raises(JournalWriteError):
            journal.append(BEAM_ON, "T-1", value=float("nan"))
        with pytest.raises(JournalWriteError):
            journal.append(BEAM_ON, "T-1", value=object())
    assert path.read_bytes() == b""
