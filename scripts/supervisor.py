"""Keeps `elimu up`'s child processes running: a child that dies is restarted with backoff.

The decisions are plain data and arithmetic (``Backoff``, ``RestartBook``) so they are tested
without processes; ``Supervisor`` applies them to real ones. A crash-looping child must not
spin a core, hence the exponential delay; one that has since stayed up a while is healthy
again, hence the reset.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a child that exited.

    ``initial_s`` after its first crash, multiplied by ``factor`` for each consecutive one,
    never more than ``max_s``. A child that stayed up ``stable_s`` before exiting was healthy:
    its count of consecutive crashes starts again.
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, consecutive: int) -> float:
        if consecutive < 1:
            raise ValueError(f"consecutive crashes start at 1, got {consecutive}")
        # The exponent is capped so a child failing for days cannot overflow the float.
        return min(self.max_s, self.initial_s * self.factor ** min(consecutive - 1, 64))


@dataclass
class RestartBook:
    """Restart bookkeeping of one child: no processes here, only what happened to it."""

    restarts: int = 0
    consecutive_crashes: int = 0
    last_exit: int | None = None

    def exited(self, code: int, uptime_s: float, policy: Backoff) -> float:
        """Record an exit after ``uptime_s`` of life; return the delay before its restart."""
        if uptime_s >= policy.stable_s:
            self.consecutive_crashes = 0
        self.consecutive_crashes += 1
        self.last_exit = code
        return policy.delay(self.consecutive_crashes)

    def restarted(self) -> None:
        self.restarts += 1


def describe_exit(code: int) -> str:
    """``-9 (SIGKILL)`` for a signal, the number otherwise."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    log_path: Path | None = None
    #: False: this child's death stops the whole stack (a restart would hide lost data, e.g. a
    #: memory-only broker that would come back empty).
    restartable: bool = True
    #: Stop order: higher tiers stop first (the app before the broker and Redis it flushes to).
    tier: int = 1


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    book: RestartBook = field(default_factory=RestartBook)
    #: When a restart is due (monotonic seconds); None when running or stopped for good.
    restart_at: float | None = None


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the child gets SIGTERM if `elimu up` itself is killed, instead of living on as an
    orphan holding the API port and a group membership."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's whole process group (it leads its own session), else just the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def _log_stderr(line: str) -> None:
    print(f"elimu up {time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


class Supervisor:
    """Starts children, restarts those that die, and stops them all (SIGTERM, then SIGKILL).

    Single-threaded: ``run`` (or repeated ``poll`` calls) does all the work on the caller's thread.
    Every child leads its own session, so a Ctrl-C at the terminal reaches only the supervisor,
    which then stops the children in order rather than racing them.
    """

    def __init__(
        self,
        policy: Backoff | None = None,
        *,
        status_path: Path | None = None,
        log: Callable[[str], None] = _log_stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or Backoff()
        self.status_path = status_path
        self.log = log
        self.clock = clock
        self.children: list[Child] = []
        #: False while the stack starts (an exit then is a configuration error: fail fast) and
        #: while it stops.
        self.restarting = True

    # -- starting -------------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children.append(child)
        self._spawn(child)
        self._write_status()
        return child

    def adopt(self, spec: ChildSpec, proc: subprocess.Popen[bytes]) -> Child:
        """Supervise a process started elsewhere (the embedded broker and Redis wait for their port)."""
        child = Child(spec, proc, self.clock())
        self.children.append(child)
        self._write_status()
        return child

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        out: Any = subprocess.DEVNULL
        if spec.log_path is not None:
            out = open(spec.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        try:
            child.proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # preexec_fn is unsafe with threads; the supervisor starts children from one thread.
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        child.started_at = self.clock()

    # -- supervising ----------------------------------------------------------------------------

    def poll(self) -> str | None:
        """One step: notice exits, restart what is due. Returns why the stack must stop, if it must."""
        now = self.clock()
        changed = False
        fatal: str | None = None
        for child in self.children:
            code = child.proc.poll() if child.proc is not None else None
            if child.proc is not None and code is not None:
                child.proc = None
                changed = True
                uptime = now - child.started_at
                if not (self.restarting and child.spec.restartable):
                    child.book.last_exit = code
                    fatal = fatal or f"{child.spec.name} exited with {describe_exit(code)}"
                    continue
                delay = child.book.exited(code, uptime, self.policy)
                child.restart_at = now + delay
                self.log(
                    f"{child.spec.name} exited with {describe_exit(code)} after {uptime:.1f}s; "
                    f"restart #{child.book.restarts + 1} in {delay:g}s"
                )
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                changed = True
                child.restart_at = None
                try:
                    self._spawn(child)
                except OSError as exc:
                    delay = child.book.exited(-1, 0.0, self.policy)
                    child.restart_at = now + delay
                    self.log(f"{child.spec.name} could not start ({exc}); next try in {delay:g}s")
                    continue
                child.book.restarted()
                pid = child.proc.pid if child.proc is not None else None
                self.log(f"{child.spec.name} restarted (pid {pid}, restart #{child.book.restarts})")
        if changed:
            self._write_status()
        return fatal

    def next_wait(self, tick: float) -> float:
        """How long ``run`` may sleep: ``tick``, or less when a restart falls due sooner."""
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        if not due:
            return tick
        return max(0.0, min(tick, min(due) - self.clock()))

    def run(self, stop: threading.Event, tick: float = 0.2) -> str | None:
        """Supervise until ``stop`` is set (returns None) or a child that may not restart dies."""
        while not stop.is_set():
            reason = self.poll()
            if reason is not None:
                return reason
            # Event.wait returns as soon as a signal handler sets ``stop``: Ctrl-C acts at once.
            stop.wait(self.next_wait(tick))
        return None

    # -- stopping -------------------------------------------------------------------------------

    def stop(self, grace_s: float = 15.0, hurry: threading.Event | None = None) -> None:
        """SIGTERM each tier (highest first) at once, SIGKILL what is left after ``grace_s``
        (or as soon as ``hurry`` is set: a second Ctrl-C)."""
        self.restarting = False
        for child in self.children:
            child.restart_at = None
        for tier in sorted({c.spec.tier for c in self.children}, reverse=True):
            group = [c for c in self.children if c.spec.tier == tier and c.proc is not None]
            for child in group:
                assert child.proc is not None
                _signal(child.proc, signal.SIGTERM)
            deadline = self.clock() + grace_s
            while any(c.proc is not None and c.proc.poll() is None for c in group):
                if self.clock() >= deadline or (hurry is not None and hurry.is_set()):
                    break
                if hurry is not None:
                    hurry.wait(0.05)
                else:
                    time.sleep(0.05)
            for child in group:
                assert child.proc is not None
                if child.proc.poll() is None:
                    self.log(f"{child.spec.name} did not stop within {grace_s:g}s; killing it")
                    _signal(child.proc, signal.SIGKILL)
                child.book.last_exit = child.proc.wait()
                child.proc = None
        self._write_status()

    # -- reporting ------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in self.children:
            if c.proc is not None:
                state = "running"
            else:
                state = "restarting" if c.restart_at is not None else "stopped"
            out[c.spec.name] = {
                "state": state,
                "pid": c.proc.pid if c.proc is not None else None,
                "restarts": c.book.restarts,
                "last_exit": c.book.last_exit,
            }
        return out

    def _write_status(self) -> None:
        """Operators (and tests) read who runs under which pid and how often it restarted."""
        if self.status_path is None:
            return
        write_json_atomically(self.status_path, self.status())


def write_json_atomically(path: Path, value: object) -> None:
    """``value`` as JSON at ``path``, whole or not at all: a reader polling for the file (an
    operator's script, a test) never sees it empty or half written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)
