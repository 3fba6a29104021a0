"""Attack speed, side by side in one run, on the same model and the same 1,000 MNIST test inputs:

Each timing is the median of --repeats calls.

1. PGD-40 L-inf at one epsilon: robustcnn.evaluate_robustness (clean predictions, per-sample records and
   all) and the registry's PGD object alone vs foolbox called directly vs a bare torch PGD loop. Goal:
   robustcnn <= 1.15x the bare loop.
2. A 6-point epsilon curve: robustcnn (samples broken at a smaller epsilon are not attacked again) vs foolbox's
   own multi-epsilon call (one full attack per epsilon). Goal: half of foolbox's time or less.

    python benchmarks/attack_speed.py --data-root ../shared/data [--device cpu|cuda] [--n 1000] [--dataset digits]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from robustcnn import AttackConfig, TrainConfig, create_model, evaluate_robustness, load_dataset, seed_everything
from robustcnn import train_model as train
from robustcnn.attacks import CountingModel, TorchModel
from robustcnn.train import resolve_device

STEPS, EPS, CURVE = 40, 0.1, [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls (each seeded the same), and the last call's result."""
    times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def bare_pgd(model, x, y, eps: float, steps: int, step: float) -> float:
    """A plain PGD loop (random start, signed gradient, projection); returns robust accuracy."""
    x_adv = (x + eps * (torch.rand_like(x) * 2 - 1)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--dataset", default="mnist", help="mnist, or digits (embedded, at 28x28) for a quick look")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import foolbox as fb

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, root=args.data_root, image_size=28, device=device)
    seed_everything(0)
    model = create_model("lenet5", dataset=data)
    train(model, data, TrainConfig(epochs=3, optimizer="adadelta"), seed=0, device=device, progress=False)
    model.eval()
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    cfg = AttackConfig("pgd", steps=STEPS)
    rel = cfg.settings()["step_size"]
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.LinfPGD(steps=STEPS, rel_stepsize=rel, random_start=True)
    evaluate_robustness(model, x[:50], y[:50], attacks=[cfg], epsilons=[EPS])  # warm-up

    t_bare, acc_bare = timed(lambda: bare_pgd(model, x, y, EPS, STEPS, rel * EPS), device, args.repeats)
    t_fb, out_fb = timed(lambda: attack(fmodel, x, y, epsilons=[EPS]), device, args.repeats)
    def ours(epsilons: list[float]):
        return evaluate_robustness(model, x, y, attacks=[cfg], epsilons=epsilons, batch_size=args.n)

    registry_pgd = cfg.build()  # the registry's attack object alone, called as the evaluation calls it
    counted = TorchModel(CountingModel(model)) if getattr(registry_pgd, "torch_model", False) else \
        fb.PyTorchModel(CountingModel(model), bounds=(0, 1), device=device)
    t_atk, out_atk = timed(lambda: registry_pgd(counted, x, y, epsilons=[EPS]), device, args.repeats)
    t_rc, res = timed(lambda: ours([EPS]), device, args.repeats)
    acc_fb = 1 - out_fb[2][0].float().mean().item()
    acc_rc = float(res.table["robust_accuracy"].iloc[-1])
    print(f"device {device}, lenet5 (3 epochs Adadelta), {args.n} {args.dataset} test inputs, PGD-{STEPS} eps {EPS}, "
          f"median of {args.repeats} runs each")
    print(f"bare torch PGD loop:   {t_bare:7.3f} s  robust accuracy {acc_bare:.3f}")
    print(f"foolbox LinfPGD:       {t_fb:7.3f} s  robust accuracy {acc_fb:.3f}  ratio to bare {t_fb / t_bare:.3f}")
    acc_atk = 1 - out_atk[2][0].float().mean().item()
    print(f"robustcnn pgd attack:  {t_atk:7.3f} s  robust accuracy {acc_atk:.3f}  ratio to bare {t_atk / t_bare:.3f}")
    print(f"robustcnn evaluation:  {t_rc:7.3f} s  robust accuracy {acc_rc:.3f}  ratio to bare {t_rc / t_bare:.3f} "
          "(goal <= 1.15; includes clean predictions and per-sample records)")

    t_fb6, out6 = timed(lambda: attack(fmodel, x, y, epsilons=CURVE), device, args.repeats)
    t_rc6, res6 = timed(lambda: ours(CURVE), device, args.repeats)
    fb_curve = [round(1 - s.float().mean().item(), 3) for s in out6[2]]
    rc_curve = [round(v, 3) for v in res6.table["robust_accuracy"]]
    print(f"6-point curve {CURVE}")
    print(f"foolbox multi-epsilon: {t_fb6:7.3f} s  ({t_fb6 / t_fb:.1f}x its single epsilon)  {fb_curve}")
    print(f"robustcnn:             {t_rc6:7.3f} s  ratio to foolbox {t_rc6 / t_fb6:.3f} (goal <= 0.5)  {rc_curve}")


if __name__ == "__main__":
    main()
