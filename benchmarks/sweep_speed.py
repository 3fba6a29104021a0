"""Sweep engine speed, side by side in one run:

1. the double-descent CPU profile (`robustcnn study double-descent` defaults), wall time (goal <= 10 minutes);
2. the same study again into the same --out: every point resumes from the store, so the wall time is what a
   resumed sweep spends on finished points (goal ~0 beyond writing the tables and figures);
3. a 6-point sweep (about 30 s of work) through the `ray` executor vs `local` (needs `pip install robustcnn[ray]`);
   Ray's start-up (about 10 s here) is included.

    python benchmarks/sweep_speed.py [--out /tmp/sweep-bench] [--skip-full]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from robustcnn.experiments.common import DataSpec, ModelSpec
from robustcnn.experiments.generalization import SweepStudy, SweepStudyConfig, default_config, run_sweep_study
from robustcnn.sweep import Executor
from robustcnn.train import TrainConfig


def timed(cfg: SweepStudyConfig, out: Path) -> float:
    t0 = time.perf_counter()
    run_sweep_study(cfg, out, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="sweep-bench-")))
    parser.add_argument("--skip-full", action="store_true", help="skip the full CPU profile (parts 1 and 2)")
    args = parser.parse_args()
    if not args.skip_full:
        cfg = default_config(SweepStudy.DOUBLE_DESCENT)
        full = timed(cfg, args.out / "full")
        again = timed(cfg, args.out / "full")
        print(f"double-descent CPU profile: {full:.1f} s (goal <= 600 s)")
        print(f"the same study resumed (all points finished): {again:.1f} s ({again / full:.1%} of the full run)")
    small = SweepStudyConfig(study=SweepStudy.DOUBLE_DESCENT, data=DataSpec("digits", label_noise=0.2),
                             model=ModelSpec("mlp", train=TrainConfig(epochs=300, batch_size=128)),
                             widths=[4, 16, 64, 256, 512, 1024])
    local = timed(small, args.out / "local")
    try:
        import ray  # noqa: F401
    except ImportError:
        print(f"local executor, 6-point sweep: {local:.1f} s; ray is not installed (pip install 'robustcnn[ray]')")
        return
    from dataclasses import replace

    ray_seconds = timed(replace(small, executor=Executor.RAY), args.out / "ray")
    print(f"6-point sweep: local {local:.1f} s, ray {ray_seconds:.1f} s (ratio {ray_seconds / local:.2f}; Ray's start-up "
          "included)")


if __name__ == "__main__":
    main()
