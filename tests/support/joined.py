"""Start `zmesh join` as real OS processes and read the address each one prints.

After the address, a thread keeps reading the node's output (stdout and stderr), so a
chatty node never blocks on a full pipe; `Joined.output()` returns all of it once the
process has exited (`ZMESH_JOIN_VERBOSE=1` echoes it to stderr as it comes).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

LINE = re.compile(r"zmesh: node (\S+) up at (\S+)")


@dataclass
class Joined:
    name: str
    address: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self, timeout: float = 10.0) -> str:
        """Everything the node printed, once it has exited (waits up to `timeout`)."""
        self.proc.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)
        return "".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)


def start_join(
    name: str,
    cookie: str,
    *args: str,
    timeout: float = 20.0,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    load: bool = True,
) -> Joined:
    """`zmesh join NAME --listen tcp://127.0.0.1:0 ...`, once it has printed its address.
    `prefix` runs it through a wrapper, e.g. `("ip", "netns", "exec", NS)`; `env` is
    added to the environment; `load` adds `--load zmesh_test_app`."""
    cmd = [
        *prefix, sys.executable, "-m", "zmesh", "join", name,
        "--listen", "tcp://127.0.0.1:0", *(("--load", "zmesh_test_app") if load else ()), *args,
    ]  # fmt: skip
    environ = {**os.environ, "ZMESH_COOKIE": cookie, **(env or {})}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(deadline - time.monotonic(), 0)):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = LINE.search(line)
        if match:
            sel.close()
            joined = Joined(match.group(1), match.group(2), proc, seen)
            joined.reader = threading.Thread(target=_drain, args=(joined,), daemon=True)
            joined.reader.start()
            return joined
    proc.kill()
    raise RuntimeError(f"{cmd} did not come up: {''.join(seen)!r}")


def _drain(joined: Joined) -> None:
    assert joined.proc.stdout is not None
    verbose = bool(os.environ.get("ZMESH_JOIN_VERBOSE"))
    for line in joined.proc.stdout:
        joined.lines.append(line)
        if verbose:
            sys.stderr.write(f"[{joined.name}] {line}")
