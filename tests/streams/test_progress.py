"""`streams.progress`: a batch in flight too long is a stall, reported with the reason."""

from __future__ import annotations

from streams.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_in_flight_past_the_threshold_is_a_stall_with_the_last_problem() -> None:
    clock = Clock()
    progress = Progress(clock)
    token = progress.begin("engagement")
    clock.now += Progress.STALL_AFTER_S - 1
    assert progress.stall() is None
    progress.note("send to user-state-changelog failed: MessageSizeTooLargeError")
    clock.now += 2
    stall = progress.stall()
    assert stall is not None
    assert stall.agent == "engagement"
    assert stall.seconds == Progress.STALL_AFTER_S + 1
    assert "MessageSizeTooLargeError" in stall.reason
    progress.end(token)
    assert progress.stall() is None
    assert progress.last_problem == ""


def test_the_oldest_batch_is_reported_and_a_stall_without_a_noted_problem_still_says_so() -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.begin("market")
    clock.now += 10
    progress.begin("engagement")
    clock.now += Progress.STALL_AFTER_S
    stall = progress.stall()
    assert stall is not None and stall.agent == "market"
    assert stall.reason == "a batch has not finished"
    assert stall.to_dict() == {
        "agent": "market",
        "seconds": Progress.STALL_AFTER_S + 10,
        "reason": stall.reason,
    }
