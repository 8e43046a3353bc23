"""Call history on disk."""

from __future__ import annotations

from pathlib import Path

from softphone.history import CallHistory


def test_calls_come_back_newest_first_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.jsonl"
    CallHistory(path).record({"id": "1"})
    CallHistory(path).record({"id": "2"})

    assert [c["id"] for c in CallHistory(path).recent()] == ["2", "1"]


def test_the_file_is_trimmed_to_the_limit(tmp_path: Path) -> None:
    history = CallHistory(tmp_path / "h.jsonl", limit=3)
    for index in range(10):
        history.record({"id": str(index)})

    assert [c["id"] for c in history.recent()] == ["9", "8", "7"]
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) <= 6


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"id": "1"}\n{"id": \n')

    assert CallHistory(path).recent() == [{"id": "1"}]


def test_no_file_is_an_empty_history(tmp_path: Path) -> None:
    assert CallHistory(tmp_path / "none.jsonl").recent() == []
