"""One writer per data folder: the lock says who holds it, and dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raiwatch import datadir
from tests.harness import ROOT


def test_a_second_process_is_told_who_holds_the_folder_and_the_lock_dies_with_the_holder(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib\nfrom raiwatch import datadir\n"
         "datadir.hold(pathlib.Path(sys.argv[1]), 'raiwatch replay')\nprint('held', flush=True)\n"
         "sys.stdin.read()", str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(datadir.DataDirBusy) as busy, datadir.lock(tmp_path, "raiwatch query"):
            pass
        assert busy.value.holder == f"pid {holder.pid} (raiwatch replay)"
        assert f"{tmp_path} is in use by pid {holder.pid} (raiwatch replay)" in str(busy.value)
        assert not busy.value.by_worker
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up of any kind
        holder.wait(30)
    finally:
        holder.kill()
        holder.wait()
    with datadir.lock(tmp_path, "raiwatch query") as path:  # free again: no stale lock to remove
        assert (path / datadir.LOCK_FILE).read_text() == f"pid {os.getpid()} (raiwatch query)\n"
        with datadir.lock(tmp_path, "raiwatch query"):  # this process may ask again
            pass
        assert (path / datadir.LOCK_FILE).read_text() != ""  # still held after the inner block
    assert (tmp_path / datadir.LOCK_FILE).read_text() == ""  # released: no holder named


def test_the_replay_mark_says_how_far_a_replay_got(tmp_path: Path):
    assert datadir.replay_mark(tmp_path) is None  # no replay made it
    mark = datadir.ReplayMark(state="interrupted", events="/x/events.jsonl", lines=40_000, share=0.27)
    datadir.write_replay_mark(tmp_path, mark)
    read = datadir.replay_mark(tmp_path)
    assert read == mark and not read.complete
    assert read.describe() == "a replay interrupted after 40,000 lines (27% of events.jsonl)"
    # the mark of a replay from before marks carried their state: taken as complete
    (tmp_path / datadir.REPLAY_MARK).write_text("made by raiwatch replay; the next replay replaces it\n")
    assert datadir.replay_mark(tmp_path) == datadir.ReplayMark()
