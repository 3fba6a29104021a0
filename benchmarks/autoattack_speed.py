"""AutoAttack speed, side by side in one run, on the same model and the same MNIST test inputs:

1. AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) at one epsilon: robustcnn.evaluate_robustness vs the
   authors' package (pyautoattack) called directly. Goal: robustcnn <= 1.05x the package.
2. A 3-epsilon curve: robustcnn (examples broken at a smaller epsilon are not attacked again) vs three direct
   package runs, one per epsilon. Goal: <= 0.5x.

Both sides use one batch of all n inputs and the same seed, so they attack the same examples with the same
random draws: their robust accuracies must be equal (printed). Runs alternate (package, robustcnn, package, ...)
so that load from other processes hits both alike; each timing is the median over --repeats.

    python benchmarks/autoattack_speed.py --data-root ../shared/data [--n 1000] [--weights lenet5-mnist.pt]

The model is lenet5 trained for --epochs epochs (Adadelta) on MNIST, or loaded from --weights when that file
exists (it is written there otherwise).
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from robustcnn import AttackConfig, TrainConfig, create_model, evaluate_robustness, load_dataset, seed_everything
from robustcnn import train_model as train
from robustcnn.train import resolve_device


def timed(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, tuple[float, object]]:
    """Median wall time of each function over `repeats` rounds, the functions alternating within a round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    out: dict[str, object] = {}
    for _ in range(repeats):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out[key] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[key].append(time.perf_counter() - t0)
    return {k: (sorted(v)[len(v) // 2], out[k]) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1, help="the single epsilon of part 1")
    parser.add_argument("--curve", type=float, nargs="*", default=[0.1, 0.2, 0.3], help="none: skip part 2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.ERROR)  # the package's progress lines
    device = resolve_device(args.device)
    data = load_dataset("mnist", root=args.data_root, device=device)
    seed_everything(0)
    model = create_model("lenet5", dataset=data)
    if args.weights is not None and args.weights.exists():
        model.load_state_dict(torch.load(args.weights, map_location=device, weights_only=True))
        how = f"loaded from {args.weights}"
    else:
        train(model, data, TrainConfig(epochs=args.epochs, optimizer="adadelta"), seed=0, device=device, progress=False)
        how = f"trained {args.epochs} epoch(s) Adadelta"
        if args.weights is not None:
            torch.save(model.state_dict(), args.weights)
    model.to(device).eval()
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    cfg = AttackConfig("autoattack", options={"seed": args.seed})

    def package(eps: float) -> float:
        aa = AutoAttack(model, norm="Linf", eps=eps, seed=args.seed, version="standard", device=device)
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=len(x))
        return (y_adv == y).float().mean().item()

    def ours(epsilons: list[float]) -> list[float]:
        result = evaluate_robustness(model, x, y, attacks=[cfg], epsilons=epsilons, batch_size=len(x))
        return [round(v, 4) for v in result.table["robust_accuracy"]]

    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    print(f"device {device}, lenet5 ({how}), {len(x)} MNIST test inputs, clean accuracy {clean:.3f}, "
          f"AutoAttack standard L-inf, seed {args.seed}, median of {args.repeats} run(s)")
    one = timed({"package": lambda: package(args.eps), "ours": lambda: ours([args.eps])}, device, args.repeats)
    (t_pkg, acc_pkg), (t_rc, acc_rc) = one["package"], one["ours"]
    print(f"1. eps {args.eps:g}: package {t_pkg:8.1f} s  robust accuracy {acc_pkg:.4f}")
    print(f"             robustcnn {t_rc:8.1f} s  robust accuracy {acc_rc[0]:.4f}  ratio {t_rc / t_pkg:.3f} "
          "(goal <= 1.05)")

    if not args.curve:
        return
    fns = {f"package {e:g}": (lambda e=e: package(e)) for e in args.curve}
    fns["ours"] = lambda: ours(args.curve)
    curve = timed(fns, device, args.repeats)
    t_direct = sum(curve[f"package {e:g}"][0] for e in args.curve)
    t_curve, acc_curve = curve["ours"]
    direct = [round(curve[f"package {e:g}"][1], 4) for e in args.curve]
    each = ", ".join(f"{curve[f'package {e:g}'][0]:.1f}" for e in args.curve)
    print(f"2. curve {args.curve}: three package runs {t_direct:8.1f} s  {direct}  ({each} s)")
    print(f"             robustcnn {t_curve:8.1f} s  {acc_curve}  ratio {t_curve / t_direct:.3f} (goal <= 0.5)")


if __name__ == "__main__":
    main()
