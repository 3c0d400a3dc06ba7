"""Deterministic simulation: wall time of virtual time.

    python scripts/bench_sim.py [--seeds 5] [--seconds 120]

The target figure (issue 17): 120 virtual seconds of a 5-node cluster with 100 chatty
processes and a fault every virtual second (`zmesh.testing.soak.chaos`) in <= 2 s of
wall time. Beside it, in the same run, the baseline: the same 5 nodes idle for the same
virtual time (heartbeats only), and the real time the chaos run stands for, so the
ratios say what the workload costs and how much faster than real time it runs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from zmesh.testing import Simulation, run_simulation
from zmesh.testing.soak import chaos


def timed_chaos(seed: int, seconds: float) -> tuple[float, float, float, int]:
    async def scenario(sim: Simulation) -> tuple[float, int]:
        report = await chaos(sim, processes=100, seconds=seconds)
        assert report.problems == [], (seed, report.problems[:3])
        return report.virtual_seconds, report.messages

    start, cpu = time.perf_counter(), time.process_time()
    virtual, messages = run_simulation(scenario, n=5, seed=seed)
    return time.perf_counter() - start, time.process_time() - cpu, virtual, messages


def timed_idle(seed: int, seconds: float) -> tuple[float, float]:
    async def scenario(sim: Simulation) -> None:
        import asyncio

        await asyncio.sleep(seconds)

    start, cpu = time.perf_counter(), time.process_time()
    run_simulation(scenario, n=5, seed=seed)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    chaos_walls, idle_walls, chaos_cpus = [], [], []
    for seed in range(args.seeds):
        wall, cpu, virtual, messages = timed_chaos(seed, args.seconds)
        idle, idle_cpu = timed_idle(seed, args.seconds)
        chaos_walls.append(wall)
        chaos_cpus.append(cpu)
        idle_walls.append(idle)
        print(
            f"seed {seed}: chaos {virtual:.1f} virtual s, {messages} messages checked,"
            f" in {wall:.2f} s wall, {cpu:.2f} s CPU ({virtual / wall:.0f}x real time);"
            f" idle cluster {args.seconds:.0f} virtual s in {idle:.2f} s wall, {idle_cpu:.2f} s CPU"
        )
    med, worst, idle = (
        statistics.median(chaos_walls),
        max(chaos_walls),
        statistics.median(idle_walls),
    )
    print(
        f"chaos: median {med:.2f} s, worst {worst:.2f} s wall for {args.seconds:.0f} virtual s"
        f" (target <= 2 s), CPU median {statistics.median(chaos_cpus):.2f} s;"
        f" idle baseline {idle:.2f} s (chaos/idle {med / idle:.1f}x);"
        f" real time would be {args.seconds:.0f} s ({args.seconds / med:.0f}x slower)"
    )


if __name__ == "__main__":
    main()
