"""Services under random fault schedules: count duplicates and losses after each settle.

    python scripts/soak_services.py --schedules 200 --seed 1

One `zmesh.testing.Cluster(3)` over loopback tcp runs `--services` counters; each
schedule is 1-4 random faults (partition, kill, pause past down_after, graceful leave,
a cut link) applied one after another, then everything is undone (heal, resume,
restart) and the cluster is settled. After the faults (unless a cut link left the
network without clean groups) and again after the heal, every group of connected nodes
must hold exactly one instance of every service, on its ring
owner, registered on every node of the group (`Cluster.service_problems`). Prints, per
schedule, the faults and the time to settle; at the end the number of schedules whose
settled state had a duplicate, a missing instance or any other problem (target: 0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from zmesh import ConfigError
from zmesh.testing import Cluster, SettleTimeout

NODES = ["n1", "n2", "n3"]


async def one_schedule(c: Cluster, rnd: random.Random) -> tuple[list[str], list[str]]:
    """Apply 1-4 faults, settle, undo them all, settle; the faults and any problems."""
    faults: list[str] = []
    dead: set[str] = set()
    paused: set[str] = set()
    for _ in range(rnd.randint(1, 4)):
        live = [n for n in NODES if n not in dead and n not in paused]
        kind = rnd.choice(["partition", "kill", "pause", "leave", "drop"])
        if kind == "partition":
            alone = rnd.choice(NODES)
            await c.partition([alone])
            faults.append(f"partition[{alone}]")
        elif kind == "drop":
            a, b = rnd.sample(NODES, 2)
            await c.drop(a, b, 1.0)
            faults.append(f"drop[{a}-{b}]")
        elif len(live) > 1:
            victim = rnd.choice(live)
            if kind == "kill":
                await c.kill(victim)
                dead.add(victim)
            elif kind == "leave":
                await c.leave(victim)
                dead.add(victim)
            else:
                await c.pause(victim)
                paused.add(victim)
            faults.append(f"{kind}[{victim}]")
        await asyncio.sleep(rnd.uniform(0.0, 0.3))
    problems: list[str] = []
    try:
        await c.settle_services(timeout=20)
    except SettleTimeout as exc:
        problems.append(f"under faults: {exc}")
    except ConfigError:
        faults.append("(cut links: checked after the heal only)")
    await c.heal()
    for name in sorted(paused):
        await c.resume(name)
    for name in sorted(dead):
        await c.restart(name)
    try:
        await c.settle_services(timeout=20)
    except SettleTimeout as exc:
        problems.append(f"after the heal: {exc}")
    return faults, problems


async def main(args: argparse.Namespace) -> int:
    rnd = random.Random(args.seed)
    names = [f"svc{i}" for i in range(args.services)]
    bad = 0
    started = time.perf_counter()
    async with Cluster(3, load=["zmesh_test_app"]) as c:
        await asyncio.gather(
            *(c["n1"].spawn_service(n, "zmesh_test_app:DistributedCounter", 0) for n in names)
        )
        for i in range(args.schedules):
            t0 = time.perf_counter()
            faults, problems = await one_schedule(c, rnd)
            took = time.perf_counter() - t0
            bad += bool(problems)
            status = "ok" if not problems else "PROBLEM " + " | ".join(problems)
            print(f"{i + 1:4d} {took:5.1f} s  {' '.join(faults):<60} {status}", flush=True)
    total = time.perf_counter() - started
    print(
        f"\n{args.schedules} schedules, {args.services} services, {total:.0f} s: "
        f"{bad} with a duplicate, a missing instance or a wrong placement after settle "
        f"(target 0)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
