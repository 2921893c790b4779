"""The logs fal sends for an attempt are kept deduplicated and bounded: at most 200
entries of at most 2,000 characters, older lines giving way to newer ones, counted."""

from __future__ import annotations

from runner.pipeline._fallogs import MAX_LOG_ENTRIES, MAX_LOG_MESSAGE, FalLogs


def _lines(start: int, count: int) -> list[dict[str, str]]:
    """``count`` distinct log entries numbered from ``start``."""
    return [{"message": f"line {n}", "timestamp": f"t{n}"} for n in range(start, start + count)]


def test_two_hundred_lines_are_kept_whole() -> None:
    """Exactly 200 lines: all kept, none counted as dropped; repeats add nothing."""
    logs = FalLogs()
    assert logs.merge(_lines(0, MAX_LOG_ENTRIES))
    assert not logs.merge(_lines(0, MAX_LOG_ENTRIES)), "a stream repeating lines adds none"
    assert MAX_LOG_ENTRIES == 200
    assert len(logs.stored()) == 200 and logs.dropped == 0


def test_the_two_hundred_and_first_line_drops_the_oldest_and_says_so() -> None:
    """201 lines: the oldest goes, and a first line counts it."""
    logs = FalLogs()
    logs.merge(_lines(0, MAX_LOG_ENTRIES + 1))
    stored = logs.stored()
    assert len(stored) == 201 and logs.dropped == 1
    assert stored[0]["message"] == "(1 earlier line(s) dropped)"
    assert stored[1]["message"] == "line 1" and stored[-1]["message"] == "line 200"


def test_a_long_message_is_cut_at_two_thousand_characters() -> None:
    """A line of 2,001 characters is kept as its first 2,000."""
    logs = FalLogs()
    logs.merge([{"message": "x" * (MAX_LOG_MESSAGE + 1), "timestamp": "t"}])
    assert MAX_LOG_MESSAGE == 2000
    assert len(logs.stored()[0]["message"]) == 2000
