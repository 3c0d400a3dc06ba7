"""Failure detection with default settings: how long until a node that was SIGKILLed or
SIGSTOPped is declared down by a peer. Real `zmesh join` processes on loopback.

With the default `NodeConfig.liveness` ("zmtp") both are seen through the watcher's
DEALER socket monitor: a SIGKILL closes the TCP connection at once, a SIGSTOP stops
answering ZeroMQ's PINGs and libzmq closes the connection after `down_after` - `tick`
without an answer. The last column says which path found it (socket or heartbeat).

    python scripts/bench_failure.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time

from progress import each, stages

import zmesh


def join(name: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmesh", "join", name, "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, ZMESH_COOKIE="bench"),
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


async def detect(sig: signal.Signals) -> tuple[float, str]:
    proc, address = join("victim")
    try:
        async with zmesh.Node("watcher", cookie="bench") as node:
            await node.connect(address)
            # Steady state, at a random phase against the heartbeat timers.
            await asyncio.sleep(0.5 + random.random() * node.config.tick)
            start = time.perf_counter()
            proc.send_signal(sig)
            while "victim" in node.nodes():
                await asyncio.sleep(0.001)
            took = time.perf_counter() - start
            how = "heartbeat" if node.stats().get("heartbeat_timeouts") else "socket"
            return took, how
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = zmesh.NodeConfig()
    print(
        f"failure detection, defaults: liveness {cfg.liveness}, tick {cfg.tick} s, "
        f"down after {cfg.down_after} s"
    )
    print(f"{'signal':10} {'median':>10} {'min':>10} {'max':>10}  {'target':10} found by")
    for sig, target in ((signal.SIGKILL, 0.1), (signal.SIGSTOP, 3.0)):
        with stages(args.rounds, sig.name) as step:
            runs = [asyncio.run(detect(sig)) for _ in each(range(args.rounds), step, "round")]
        times = [t for t, _ in runs]
        hows = ",".join(sorted({h for _, h in runs}))
        print(
            f"{sig.name:10} {statistics.median(times):9.3f}s {min(times):9.3f}s "
            f"{max(times):9.3f}s  <= {target:<5} s  {hows}"
        )


if __name__ == "__main__":
    main()
