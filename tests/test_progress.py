"""Progress lines for long work: elapsed time with the last thing the work said, and the total at the end."""

from __future__ import annotations

import time

import pytest

from reprobuild import progress


def test_activity_reports_elapsed_time_and_the_last_line(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "quiet", False)
    with progress.activity("image debian: debootstrap", every=0.05) as act:
        act.note("I: Retrieving gcc-12")
        time.sleep(0.5)
    lines = capsys.readouterr().err.splitlines()
    assert "reprobuild: image debian: debootstrap: 0s so far (I: Retrieving gcc-12)" in lines
    assert lines[-1] == "reprobuild: image debian: debootstrap: done in 0s"


def test_activity_says_no_total_when_the_work_fails(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "quiet", False)
    with pytest.raises(RuntimeError), progress.activity("writing", every=60):
        raise RuntimeError("boom")
    assert "done in" not in capsys.readouterr().err


def test_clock() -> None:
    assert [progress.clock(s) for s in (0, 41.9, 60, 125)] == ["0s", "41s", "1m00s", "2m05s"]
