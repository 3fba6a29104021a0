"""Trainer overhead: one LeNet-5 MNIST epoch through robustcnn.train vs a bare torch loop, same tensors,
same batch size, same model init, measured side by side (alternating, median of --repeats). Goal <= 1.05.

    python benchmarks/trainer_overhead.py --data-root ../shared/data [--device cpu|cuda] [--repeats 3]

Also times `robustcnn train` with its defaults (digits), which should finish in under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from robustcnn import TrainConfig, create_model, load_dataset, seed_everything
from robustcnn import train_model as train
from robustcnn.train import resolve_device


def bare_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """The 15-line reference: shuffle, slice, forward, loss, backward, step."""
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()
    sync(x.device)
    t0 = time.perf_counter()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(x.device)
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(x.device)
    return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("mnist", root=args.data_root, device=device)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, optimizer="adadelta")
    ours, bare, ours_total = [], [], []
    for _ in range(args.repeats):
        seed_everything(0)
        model = create_model("lenet5", dataset=data).to(device)
        bare.append(bare_epoch(model, data.x_train, data.y_train, args.batch_size))
        seed_everything(0)
        model = create_model("lenet5", dataset=data)
        t0 = time.perf_counter()
        history = train(model, data, cfg, seed=0, device=device, progress=False).history
        ours_total.append(time.perf_counter() - t0)
        ours.append(float(history["seconds"].iloc[0]))
    b, o, t = statistics.median(bare), statistics.median(ours), statistics.median(ours_total)
    print(f"device {device}, MNIST 60,000 examples, batch {args.batch_size}, median of {args.repeats}")
    print(f"bare torch loop, one epoch:               {b:.3f} s")
    print(f"robustcnn.train, training phase:          {o:.3f} s   ratio {o / b:.3f} (goal <= 1.05)")
    print(f"robustcnn.train, whole call (+ test eval): {t:.3f} s   ratio {t / b:.3f}")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "robustcnn", "train", "--out", out, "--device", str(device)],
                       check=True, capture_output=True)
        print(f"`robustcnn train` with its defaults (digits), wall: {time.perf_counter() - t0:.1f} s (goal < 60 s)")


if __name__ == "__main__":
    main()
