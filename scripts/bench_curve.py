"""CurveZMQ against plain (cookie-only) transport, two OS processes, same run.

A near node in this process, a `zmesh join` node in another: one started plain, one with
--curve-secret/--allow. Rounds alternate plain and CURVE so machine drift hits both.
One-way: node.send to a remote sink; round trip: a send and a reply between processes.

    python scripts/bench_curve.py [--messages 200000] [--rounds 5000] [--repeat 3] [--uvloop]

Targets (issue 14): CURVE one-way >= 0.7x plain; round trip <= 1.3x plain.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_remote import percentile, run, start_far_node, zmesh_one_way, zmesh_round_trip
from progress import each, stages

import zmesh

HERE = Path(__file__).resolve().parent
LOG = ["--log-level", "warning"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zmesh-bench-curve-"))
    keys, allow = tmp / "keys", tmp / "allow"
    allow.mkdir(parents=True)
    for name in ("near", "far"):
        zmesh.keygen(keys, name)
        shutil.copy(keys / f"{name}.key", allow)
    near_curve = zmesh.Curve(keys / "near.key_secret", str(allow))
    far_flags = ["--curve-secret", str(keys / "far.key_secret"), "--allow", str(allow)]
    figures: dict[str, tuple[list[float], list[list[float]]]] = {
        "plain": ([], []),
        "curve": ([], []),
    }
    plain, plain_addr = start_far_node(args.uvloop, LOG)
    secure, secure_addr = start_far_node(args.uvloop, [*LOG, *far_flags])
    try:
        with stages(args.repeat * 2, "curve vs plain") as step:
            for _ in each(range(args.repeat), step, "round"):
                for label, address, curve in (
                    ("plain", plain_addr, None),
                    ("curve", secure_addr, near_curve),
                ):
                    ow, rt = figures[label]
                    ow.append(run(zmesh_one_way(address, args.messages, curve), args.uvloop))
                    rt.append(run(zmesh_round_trip(address, args.rounds, curve), args.uvloop))
    finally:
        for proc in (plain, secure):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    p_ow, c_ow = (statistics.median(figures[k][0]) for k in ("plain", "curve"))
    p_rt, c_rt = (
        statistics.median(statistics.median(s) for s in figures[k][1]) * 1e6
        for k in ("plain", "curve")
    )
    p_99, c_99 = (
        statistics.median(percentile(s, 0.99) for s in figures[k][1]) * 1e6
        for k in ("plain", "curve")
    )
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"CURVE vs plain, two OS processes on loopback ({loop}; median of {args.repeat} rounds)")
    print(f"{'figure':30} {'curve':>12} {'plain':>12} {'ratio':>8}  target")
    print(f"{'one-way (msg/s)':30} {c_ow:12,.0f} {p_ow:12,.0f} {c_ow / p_ow:7.2f}x  >= 0.7x")
    print(f"{'round trip median (us)':30} {c_rt:12.1f} {p_rt:12.1f} {c_rt / p_rt:7.2f}x  <= 1.3x")
    print(f"{'round trip p99 (us)':30} {c_99:12.1f} {p_99:12.1f} {c_99 / p_99:7.2f}x")


if __name__ == "__main__":
    main()
