"""A server started as a child process: how it is launched, logged, and stopped."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.net import wait_for_port


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    address: str

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def launch(
    args: list[str], log_path: Path | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C reaches only our launcher), logging to
    ``log_path`` (appended) or nowhere, with ``env`` (default: ours)."""
    if log_path is None:
        return subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def launch_listening(args: list[str], port: int, log_path: Path | None) -> subprocess.Popen[bytes]:
    """`launch`, then wait for the server's port."""
    proc = launch(args, log_path)
    try:
        wait_for_port(port, proc=proc)
    except BaseException:
        # Never leave a half-started server behind (it would hold the port and the data dir).
        Service("starting", proc, "").stop()
        raise
    return proc
