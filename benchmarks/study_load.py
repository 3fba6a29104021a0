"""Each study's CPU profile, whole, on the machine as it is ("idle": no load of ours) and beside a background
load of busy processes, side by side in one run: the wall time of `robustcnn study <kind>` with the default
thread policy (robustcnn.devices), and the loaded/idle ratio (issue goal: no study slower than 1.3x its idle time
with a load of 4 on 2 cores).

    python benchmarks/study_load.py [--load 4] [--studies adversarial,overfitting,...] [--json out.json]
    python benchmarks/study_load.py --studies adversarial --variants "--workers 1;--workers 2"   # policies

--variants: extra command-line options, `;`-separated, each run idle and loaded (default: the defaults).

Each run is a fresh `python -m robustcnn study <kind> --quiet` into its own temporary --out (nothing is resumed:
every run trains from scratch). The background load is --load pure-Python spin loops, started just before the
study and killed when it ends. Printed per study: idle and loaded seconds, their ratio, the 1-minute load
average at the start of each run (other users' load included) and the thread count the manifest recorded.
double-descent's CPU profile takes about 20 minutes idle; it is left out unless named.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
DEFAULT = "adversarial,overfitting,generalization,memorization,invariance,lineage"


def run_study(kind: str, load: int, limit: float, variant: str = "") -> dict:
    """One whole study in a fresh process, with `load` spinners running for as long as it runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ROBUSTCNN_THREADS", "MKL_NUM_THREADS")}
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=limit + 60)]) for _ in range(load)]
    try:
        time.sleep(1.0 if spinners else 0.0)  # let the spinners start
        loadavg = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "robustcnn", "study", kind, "--quiet", "--out", out,
                                   *variant.split()],
                                  env=env, capture_output=True, text=True, timeout=limit)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"study {kind} failed: {done.stderr[-2000:]}")
            (manifest,) = Path(out, kind).glob("*/manifest.json")
            threads = json.loads(manifest.read_text())["threads"]
    finally:
        for p in spinners:  # each by its own handle: only the processes this script started
            p.kill()
            p.wait()
    return {"study": kind, "variant": variant or "defaults", "condition": f"load {load}" if load else "idle", "seconds": seconds,
            "loadavg_1min": loadavg, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=4, help="busy background processes in the loaded condition")
    parser.add_argument("--studies", default=DEFAULT, help="comma-separated study kinds")
    parser.add_argument("--limit", type=float, default=3600, help="seconds before one study run is abandoned")
    parser.add_argument("--variants", default="", help="`;`-separated extra study options, each timed idle and loaded")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = []
    variants = args.variants.split(";")
    for kind in args.studies.split(","):
        for variant in variants:
            for load in (0, args.load):
                rows.append(run_study(kind, load, args.limit, variant.strip()))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    by = {(r["study"], r["variant"], r["condition"]): r for r in rows}
    print(f"{'study':16} {'variant':16} {'idle s':>8} {'load s':>8} {'ratio':>6} {'loadavg idle/load':>18} threads")
    for kind in args.studies.split(","):
        for variant in variants:
            v = variant.strip() or "defaults"
            idle, loaded = by[(kind, v, "idle")], by[(kind, v, f"load {args.load}")]
            print(f"{kind:16} {v:16} {idle['seconds']:8.1f} {loaded['seconds']:8.1f} "
                  f"{loaded['seconds'] / idle['seconds']:6.2f} {idle['loadavg_1min']:8.2f} / {loaded['loadavg_1min']:<8.2f} "
                  f"{idle['threads']}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
