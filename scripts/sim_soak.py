"""Soak the cluster in deterministic simulation: the chaos workload over many seeds.

    python scripts/sim_soak.py --seeds 20000
    python scripts/sim_soak.py --seeds 1 --start 4711 --verbose     # replay one seed

Each seed runs `zmesh.testing.soak.chaos` on a fresh 5-node `Simulation`: 100 chatty
processes checking per-pair FIFO, monitors checking their Downs, names registered
under faults, a random fault every virtual second for `--seconds`; then everything is
healed, settled and checked. A progress line goes to stderr every `--every` seeds;
every failing seed is printed to stdout with its first problems and the command that
replays it. Exit status 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from zmesh.testing import run_simulation
from zmesh.testing.simulation import Simulation
from zmesh.testing.soak import SoakReport, chaos


def one(seed: int, seconds: float, processes: int, nodes: int) -> SoakReport:
    """One seed's soak; an exception becomes the report's only problem."""

    async def scenario(sim: Simulation) -> SoakReport:
        return await chaos(sim, processes=processes, seconds=seconds)

    try:
        return run_simulation(scenario, n=nodes, seed=seed)
    except Exception as exc:
        return SoakReport(seed, problems=[f"{type(exc).__name__}: {exc}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--seconds", type=float, default=30.0, help="virtual seconds per seed")
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--every", type=int, default=50, help="progress line every N seeds")
    parser.add_argument("--verbose", action="store_true", help="faults and node warnings too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    failed: list[int] = []
    flapped: list[int] = []
    slowest = (0.0, -1)
    started = time.perf_counter()
    virtual = 0.0
    for i, seed in enumerate(range(args.start, args.start + args.seeds), 1):
        report = one(seed, args.seconds, args.processes, args.nodes)
        virtual += report.virtual_seconds
        if report.flaps:
            flapped.append(seed)
        slowest = max(slowest, (report.registry_converged_in, seed))
        if args.verbose:
            print("\n".join(report.faults))
            print(f"seed {seed}: {report.messages} messages, digest {report.digest}")
        if report.problems:
            failed.append(seed)
            print(f"FAILED seed {seed}: {len(report.problems)} problems", flush=True)
            for problem in report.problems[:5]:
                print(f"    {problem}", flush=True)
            print(
                f"    replay: python scripts/sim_soak.py --seeds 1 --start {seed}"
                f" --seconds {args.seconds} --processes {args.processes}"
                f" --nodes {args.nodes} --verbose",
                flush=True,
            )
        if i % args.every == 0 or i == args.seeds:
            wall = time.perf_counter() - started
            print(
                f"[{i}/{args.seeds}] {wall:.1f} s wall, {virtual:.0f} virtual s"
                f" ({virtual / wall:.0f}x real time), {len(failed)} failed",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    print(
        f"{args.seeds} seeds from {args.start} in {wall:.1f} s wall:"
        f" {len(failed)} failed {failed[:50]}"
    )
    print(
        f"sessions lost after the final settle (flaps) in {len(flapped)} seeds {flapped[:20]};"
        f" slowest registry agreement after settle: {slowest[0]:.2f} virtual s (seed {slowest[1]})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
