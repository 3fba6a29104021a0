"""Thread policy: the quickstart's work with 1 and 2 torch threads, on the machine as it is ("idle": no load of
ours) and beside a synthetic background load of busy processes, side by side in one run. The default thread
count in robustcnn.devices comes from it.

    python benchmarks/thread_policy.py [--load 4] [--threads 1,2] [--repeats 1]

Each configuration runs in a fresh process (so torch's thread pools start clean) that imports torch and loads
the data first, says it is ready, and only then gets the go: the background load runs during the measured work
only, not during the imports. The work is what `robustcnn study adversarial` does on the embedded digits,
only shorter: lenet5 training steps at batch 32 (Adam), PGD-7 adversarial-training steps at batch 32, and a
foolbox PGD-10 attack on --attack-n test images (one batch). A training phase that runs past --phase-limit
seconds stops early and is extrapolated from its median step (marked in `extrapolated`). The background load is
--load pure-Python spin loops, each ending itself after a deadline and killed when the configuration ends.
Printed: median milliseconds per training step, seconds per phase and in all, each total over the 1-thread
idle total, and the 1-minute load average when the work started (other users' load included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def timed_steps(step: object, count: int, limit: float) -> tuple[float, float, bool]:
    """(median seconds per step, phase seconds, extrapolated): `count` calls of step(i), or fewer when the
    phase passes `limit` seconds, its total then extrapolated from the median."""
    times: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        times.append(step(i))
        if time.perf_counter() - start > limit and len(times) >= 3:
            break
    median = statistics.median(times)
    cut = len(times) < count
    return median, (median * count if cut else sum(times)), cut


def workload(threads: int, args: argparse.Namespace) -> dict[str, float]:
    """Set up (imports, data, model), report ready, wait for the go on stdin, then measure."""
    import torch

    from robustcnn.attacks import AttackConfig
    from robustcnn.data import load_dataset
    from robustcnn.devices import apply_threads, seed_everything
    from robustcnn.evaluation import evaluate_robustness
    from robustcnn.models import create_model
    from robustcnn.train import AdversarialTraining, TrainConfig, adversarial_batch, make_optimizer

    apply_threads(threads)
    data = load_dataset("digits", image_size=28)
    seed_everything(0)
    model = create_model("lenet5", dataset=data)
    opt = make_optimizer(model, TrainConfig(lr=3e-3))
    gen = torch.Generator().manual_seed(0)
    adv = AdversarialTraining(epsilon=0.1, steps=7)

    def step(i: int, adversarial: bool = False) -> float:
        t0 = time.perf_counter()
        idx = torch.arange(i * 32, i * 32 + 32) % len(data.y_train)
        xb, yb = data.x_train[idx], data.y_train[idx]
        if adversarial:
            xb = adversarial_batch(model, xb, yb, adv, 0, gen)
        loss = model.criterion(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    model.train()
    step(0)  # warm-up: first-call allocations and kernel selection
    print("ready", flush=True)
    sys.stdin.readline()
    load = os.getloadavg()[0]
    step_s, train_s, cut_train = timed_steps(step, args.train_steps, args.phase_limit)
    _, adv_s, cut_adv = timed_steps(lambda i: step(i, True), args.adv_steps, args.phase_limit)
    model.eval()
    t0 = time.perf_counter()
    evaluate_robustness(model, data.x_test[:args.attack_n], data.y_test[:args.attack_n],
                        attacks=[AttackConfig("pgd", steps=10)], epsilons=[0.1], batch_size=500)
    attack_s = time.perf_counter() - t0
    return {"threads_in_effect": torch.get_num_threads(), "loadavg_1min": load, "train_step_ms": 1000 * step_s,
            "train_s": train_s, "adv_train_s": adv_s, "attack_s": attack_s, "total_s": train_s + adv_s + attack_s,
            "extrapolated": cut_train or cut_adv}


def run_config(threads: int, load: int, args: argparse.Namespace) -> dict[str, float]:
    """One configuration: a fresh worker process, the background load started once it is ready."""
    cmd = [sys.executable, __file__, "--worker", str(threads), "--train-steps", str(args.train_steps),
           "--adv-steps", str(args.adv_steps), "--attack-n", str(args.attack_n), "--phase-limit", str(args.phase_limit)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ROBUSTCNN_THREADS", "MKL_NUM_THREADS")}
    worker = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    spinners: list[subprocess.Popen] = []
    try:
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the worker for {threads} thread(s) failed to start")
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=args.phase_limit * 4 + 60)])
                    for _ in range(load)]
        time.sleep(1.0 if spinners else 0.0)  # let the spinners start
        out, _ = worker.communicate("go\n", timeout=args.phase_limit * 4 + 120)
        return json.loads(out.strip().splitlines()[-1])
    finally:
        for p in [*spinners, worker]:  # each by its own handle: only the processes this script started
            if p.poll() is None:
                p.kill()
            p.wait()


def report(rows: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = ["train_step_ms", "train_s", "adv_train_s", "attack_s", "total_s", "loadavg_1min"]
    table = df.groupby(["condition", "threads"], sort=False)[cols].median().reset_index()
    table["extrapolated"] = df.groupby(["condition", "threads"], sort=False)["extrapolated"].any().to_numpy()
    base = table[(table["condition"] == "idle") & (table["threads"] == 1)]["total_s"]
    if len(base):
        table["vs_1_thread_idle"] = table["total_s"] / base.iloc[0]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for condition, g in table.groupby("condition", sort=False):
        t = g.set_index("threads")["total_s"]
        if 1 in t and len(t) > 1:
            print(f"{condition}: " + ", ".join(f"{k} threads / 1 thread = {t[k] / t[1]:.2f}" for k in t.index if k != 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=4, help="busy background processes in the loaded condition")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--adv-steps", type=int, default=10)
    parser.add_argument("--attack-n", type=int, default=200, help="test images attacked (PGD-10, one batch)")
    parser.add_argument("--phase-limit", type=float, default=12.0, help="seconds before a phase is extrapolated")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(workload(args.worker, args)))
        return
    print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    t0 = time.perf_counter()
    rows = []
    for rep in range(args.repeats):
        for load in (0, args.load):
            for threads in [int(t) for t in args.threads.split(",")]:
                row = run_config(threads, load, args)
                rows.append({"condition": f"load {load}" if load else "idle", "threads": threads, "repeat": rep, **row})
                print(f"  {rows[-1]['condition']:<7} threads {threads}: {row['total_s']:.2f} s", file=sys.stderr,
                      flush=True)
    report(rows)
    print(f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
