"""The supervisor behind `elimu up`: the restart decisions as plain arithmetic, then the same
supervisor on real child processes (tiny Python programs that exit, hang or ignore SIGTERM)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.supervisor import Backoff, ChildSpec, RestartBook, Supervisor, describe_exit

# ---------------------------------------------------------------------------------------------
# decisions, no processes


def test_backoff_doubles_from_one_second_and_stops_at_thirty() -> None:
    policy = Backoff()
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay(10_000) == 30  # days of crashing neither overflow nor grow the delay
    with pytest.raises(ValueError):
        policy.delay(0)


def test_a_crash_loop_escalates_and_a_child_that_stayed_up_starts_again_from_the_first_delay() -> None:
    policy = Backoff(initial_s=1, factor=2, max_s=30, stable_s=60)
    book = RestartBook()
    delays = []
    for _ in range(4):
        delays.append(book.exited(1, uptime_s=0.5, policy=policy))
        book.restarted()
    assert delays == [1, 2, 4, 8]
    assert (book.restarts, book.consecutive_crashes, book.last_exit) == (4, 4, 1)
    # Up for a minute before dying: healthy in between, so not punished for the old crashes.
    assert book.exited(-9, uptime_s=60.0, policy=policy) == 1
    assert book.exited(-9, uptime_s=59.9, policy=policy) == 2
    assert (book.consecutive_crashes, book.last_exit) == (2, -9)
    assert book.restarts == 4  # counted when a restart happens, not when a child dies


def test_exit_codes_name_their_signal() -> None:
    assert describe_exit(-9) == "-9 (SIGKILL)"
    assert describe_exit(-15) == "-15 (SIGTERM)"
    assert describe_exit(3) == "3"
    assert describe_exit(-200) == "-200"


# ---------------------------------------------------------------------------------------------
# real child processes

EXIT_3 = "import sys; sys.exit(3)"
#: Writes "ready" once it ignores SIGTERM, so the test never signals it before that.
STUBBORN = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); signal.pause()"
)
PAUSE = "import signal; print('ready', flush=True); signal.pause()"


EXITED = re.compile(r"flaky exited with 3 after [0-9.]+s; restart #(\d+) in ([0-9.]+)s")


def py(name: str, code: str, tmp_path: Path, **kw: Any) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", code), log_path=tmp_path / f"{name}.log", **kw)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait for a reaper that never comes in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for(
    cond: Callable[[], Any], timeout: float = 20.0, what: str = "", step: Callable[[], Any] | None = None
) -> Any:
    """Poll ``cond`` (running ``step`` first, e.g. one supervision pass) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step is not None:
            step()
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def ready(spec: ChildSpec) -> bool:
    assert spec.log_path is not None
    return spec.log_path.exists() and "ready" in spec.log_path.read_text()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[Supervisor, list[str]]]:
    lines: list[str] = []
    sup = Supervisor(
        Backoff(initial_s=0.05, factor=2, max_s=0.2, stable_s=60),
        status_path=tmp_path / "processes.json",
        log=lines.append,
    )
    yield sup, lines
    sup.stop(grace_s=1)


def test_a_child_that_keeps_exiting_is_restarted_with_growing_delays_each_logged_and_counted(
    supervisor: tuple[Supervisor, list[str]], tmp_path: Path
) -> None:
    sup, lines = supervisor
    child = sup.start(py("flaky", EXIT_3, tmp_path))
    starts: list[float] = []
    seen: set[int] = set()

    def note_start() -> None:
        sup.poll()
        if child.proc is not None and child.proc.pid not in seen:
            seen.add(child.proc.pid)
            starts.append(child.started_at)

    wait_for(lambda: child.book.restarts >= 4, step=note_start, what="four restarts")
    exits = [m.groups() for line in lines if (m := EXITED.fullmatch(line))]
    assert exits[:4] == [("1", "0.05"), ("2", "0.1"), ("3", "0.2"), ("4", "0.2")], lines
    assert any(line.startswith("flaky restarted (pid ") for line in lines)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= want for gap, want in zip(gaps, [0.05, 0.1, 0.2], strict=False)), gaps
    status = json.loads((tmp_path / "processes.json").read_text())["flaky"]
    assert status["restarts"] >= 4 and status["last_exit"] == 3


def test_killing_one_child_restarts_it_alone_and_the_others_keep_their_process(
    supervisor: tuple[Supervisor, list[str]], tmp_path: Path
) -> None:
    sup, lines = supervisor
    a = sup.start(py("worker-0", PAUSE, tmp_path))
    b = sup.start(py("worker-1", PAUSE, tmp_path))
    wait_for(lambda: ready(a.spec) and ready(b.spec), what="children started")
    assert a.proc is not None and b.proc is not None
    first, other = a.proc.pid, b.proc.pid

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: a.proc is not None and a.proc.pid != first, step=sup.poll, what="worker-0 restarted")

    assert running(a.proc.pid) and not running(first)
    assert b.proc is not None and b.proc.pid == other and running(other) and b.book.restarts == 0
    assert any("worker-0 exited with -9 (SIGKILL)" in line for line in lines), lines
    status = json.loads((tmp_path / "processes.json").read_text())
    assert status["worker-0"] == {"state": "running", "pid": a.proc.pid, "restarts": 1, "last_exit": -9}
    assert status["worker-1"] == {"state": "running", "pid": other, "restarts": 0, "last_exit": None}


def test_a_child_that_may_not_restart_stops_the_run_with_the_reason(tmp_path: Path) -> None:
    sup = Supervisor(Backoff(initial_s=0.05), log=lambda _: None)
    try:
        sup.start(py("kafka", EXIT_3, tmp_path, restartable=False, tier=0))
        survivor = sup.start(py("api", PAUSE, tmp_path))
        reason = sup.run(threading.Event(), tick=0.02)
        assert reason == "kafka exited with 3"
        assert survivor.proc is not None and survivor.proc.poll() is None  # the caller decides
    finally:
        sup.stop(grace_s=1)


def test_nothing_restarts_while_starting_up_an_exit_is_reported_instead(tmp_path: Path) -> None:
    sup = Supervisor(Backoff(initial_s=0.01), log=lambda _: None)
    sup.restarting = False
    child = sup.start(py("api", EXIT_3, tmp_path))
    reason = wait_for(sup.poll, what="the exit reported")
    assert reason == "api exited with 3"
    assert child.proc is None and child.restart_at is None and child.book.restarts == 0


def test_stop_terminates_then_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(log=lines.append, status_path=tmp_path / "processes.json")
    polite = sup.start(py("worker", PAUSE, tmp_path))
    stubborn = sup.start(py("api", STUBBORN, tmp_path))
    infra = sup.start(py("redis", PAUSE, tmp_path, tier=0))
    wait_for(lambda: all(ready(c.spec) for c in (polite, stubborn, infra)), what="children started")
    pids = [c.proc.pid for c in (polite, stubborn, infra) if c.proc is not None]

    began = time.monotonic()
    sup.stop(grace_s=1.0)
    took = time.monotonic() - began

    assert 1.0 <= took < 5.0, took  # waited the grace for the stubborn one, not the 15 s default
    assert not any(running(pid) for pid in pids)
    assert polite.book.last_exit == -signal.SIGTERM
    assert stubborn.book.last_exit == -signal.SIGKILL
    assert infra.book.last_exit == -signal.SIGTERM
    assert lines == ["api did not stop within 1s; killing it"]
    status = json.loads((tmp_path / "processes.json").read_text())
    assert {s["state"] for s in status.values()} == {"stopped"}


def test_a_second_interrupt_kills_at_once_instead_of_waiting_the_grace(tmp_path: Path) -> None:
    sup = Supervisor(log=lambda _: None)
    stubborn = sup.start(py("api", STUBBORN, tmp_path))
    wait_for(lambda: ready(stubborn.spec), what="child started")
    hurry = threading.Event()
    hurry.set()
    began = time.monotonic()
    sup.stop(grace_s=60, hurry=hurry)
    assert time.monotonic() - began < 5
    assert stubborn.book.last_exit == -signal.SIGKILL


SUPERVISOR_PROGRAM = """
import sys, threading
from pathlib import Path
from scripts.supervisor import ChildSpec, Supervisor
sup = Supervisor(status_path=Path(sys.argv[1]))
sup.start(ChildSpec("worker", (sys.executable, "-c", "import signal; signal.pause()")))
sup.run(threading.Event())
"""


def test_children_do_not_outlive_a_supervisor_killed_with_sigkill(tmp_path: Path) -> None:
    status = tmp_path / "processes.json"
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR_PROGRAM, str(status)], cwd=root)
    pid: int | None = None
    try:
        pid = wait_for(
            lambda: status.exists() and json.loads(status.read_text())["worker"]["pid"], what="child pid"
        )
        assert running(pid)
        parent.kill()
        parent.wait()
        wait_for(lambda: not running(pid), what="the orphan gone")
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGKILL)  # the test failed: leave no orphan behind
