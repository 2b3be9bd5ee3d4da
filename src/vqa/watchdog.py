"""A deadline for forming a cluster: ``python -m vqa.watchdog PARENT SECONDS RANK ENV ADDRESS...``.

TensorFlow waits for the other workers in C++ while holding the GIL, so no Python thread or
signal handler of the waiting process can run until the cluster forms. The deadline is
therefore a separate process, started by ``watching``: if its parent is still waiting after
SECONDS, it prints one line naming the first worker that does not answer (or saying that all
answer), telling the user to raise the environment variable ENV, and kills the parent
(SIGKILL, exit status 137). It exits quietly as soon as its parent is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def parent_outlived(parent: int, seconds: float) -> bool:
    """Wait up to ``seconds``; True if process ``parent`` is still this process's parent by then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            return False
    return True


def answers(address: str) -> bool:
    """Whether something accepts a TCP connection at "host:port" within 2 s."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def timeout_message(rank: int, addresses: list[str], seconds: float, env: str) -> str:
    """The one line for a cluster that did not form: the first silent worker other than ``rank``, if any."""
    silent = [(r, a) for r, a in enumerate(addresses) if r != rank and not answers(a)]
    if silent:
        r, a = silent[0]
        problem = (f"worker {r} at {a} not reachable within {seconds:g} s; start the same command there, "
                   f"check its host and firewall, or raise {env}")
    else:
        problem = f"the cluster did not form within {seconds:g} s though every worker answers; raise {env}"
    return f"vqa train: error: TF_CONFIG: {problem}"


def main(argv: list[str] | None = None) -> int:
    """Watch the parent process; after the deadline print the line and kill it. Returns 0 if the parent left first."""
    parser = argparse.ArgumentParser(prog="python -m vqa.watchdog", description=__doc__.splitlines()[0])
    parser.add_argument("parent", type=int, help="process id to kill after the deadline (this process's parent)")
    parser.add_argument("seconds", type=float, help="the deadline")
    parser.add_argument("rank", type=int, help="the parent's rank in the cluster (not probed)")
    parser.add_argument("env", help="the environment variable that sets the deadline, named in the message")
    parser.add_argument("addresses", nargs="+", help="every worker's host:port in rank order")
    args = parser.parse_args(argv)
    if not parent_outlived(args.parent, args.seconds):
        return 0
    print(timeout_message(args.rank, args.addresses, args.seconds, args.env), file=sys.stderr, flush=True)
    os.kill(args.parent, signal.SIGKILL)
    return 1


@contextlib.contextmanager
def watching(rank: int, addresses: tuple[str, ...], seconds: float, env: str):
    """Run the body, or have ``python -m vqa.watchdog`` kill this process with one line after ``seconds``."""
    # The child imports this very package, wherever it was imported from here.
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    watchdog = subprocess.Popen([sys.executable, "-m", "vqa.watchdog", str(os.getpid()), str(seconds), str(rank),
                                 env, *addresses], env={**os.environ, "PYTHONPATH": path})
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


if __name__ == "__main__":
    sys.exit(main())
