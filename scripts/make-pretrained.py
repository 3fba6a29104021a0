#!/usr/bin/env python3
"""Build the pretrained zoo (robustcnn/pretrained/) from reference run folders.

    scripts/make-pretrained.py --data-root ../shared/data \\
        --add results/adversarial/<run-id> lenet5 mnist \\
        --add results/adversarial/<run-id> lenet5-pgd mnist-pgd \\
        --add results/train/<run-id> lenet5_1998 mnist

Each --add RUN_DIR LABEL TAG copies RUN_DIR/checkpoints/LABEL-final.pt to robustcnn/pretrained/<arch>-<TAG>.pt
(arch: the model's registry name, from the run's manifest) and records in index.json: the file's sha256 and
size, the source run (kind, run id, git commit, checkpoint), the arguments that rebuild the architecture, the
clean accuracy on the whole test split (measured here by loading the copied file, as users will), and the
reference scorecard: `robustcnn benchmark` of the copied weights with its default suite and epsilons on the
first --n-examples test images, whose worst-case curve the benchmark draws beside every model on that dataset.
Entries of other (model, tag) pairs already in the index are kept.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from robustcnn.benchmark import benchmark, weights_hash
from robustcnn.data import load_dataset
from robustcnn.errors import UsageError
from robustcnn.model_files import load_weights_into, read_weights
from robustcnn.models import create_model, model_input_size
from robustcnn.results import read_manifest, safe_name, write_json
from robustcnn.zoo import INDEX, PRETRAINED_DIR, read_index, sha256_bytes


def model_spec(config: dict[str, Any], label: str) -> dict[str, Any]:
    """The run config's model entry called `label` (studies list `models`; `robustcnn train` has one `model`)."""
    specs = config.get("models") or ([config["model"]] if "model" in config else [])
    for spec in specs:
        if spec.get("name") == label:
            return spec
    raise UsageError(f"the run has no model '{label}'; it has: {', '.join(s.get('name', '?') for s in specs)}")


@torch.no_grad()
def test_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    return correct / len(y)


def worst_curve(robust: Any) -> Any:
    """The L-inf worst case over the scorecard's attacks (its only L-inf attack when it ran one)."""
    linf = robust[robust["threat_model"] == "linf"]
    worst = linf[linf["attack"].str.startswith("worst_case")]
    if worst.empty and linf["attack"].nunique() == 1:
        return linf
    return worst


def make_entry(run_dir: Path, label: str, tag: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    manifest = read_manifest(run_dir)
    config = manifest["config"]
    spec = model_spec(config, label)
    arch, kwargs = spec.get("arch") or spec["name"], dict(spec.get("kwargs") or {})
    dataset = config["data"]["dataset"]
    checkpoint = run_dir / "checkpoints" / f"{safe_name(label, 'label')}-{args.which}.pt"
    if not checkpoint.is_file():
        raise UsageError(f"{checkpoint} does not exist; rerun the study with checkpoints = true")
    data = load_dataset(dataset, root=args.data_root or config["data"].get("data_root"),
                        image_size=model_input_size(arch))
    target = out / f"{safe_name(arch, 'model')}-{safe_name(tag, 'tag')}.pt"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    model = create_model(arch, dataset=data, **kwargs)
    load_weights_into(model, read_weights(target, trust=False), target)  # the copy, read as users read it
    model.eval()
    card = benchmark(model, dataset=data, n_examples=args.n_examples, attacks=args.attacks, epsilons=args.eps,
                     device="cpu", lint=False, name=f"{arch} [{tag}]")
    worst = worst_curve(card.robust)
    return {
        "model": arch, "tag": tag, "dataset": dataset, "file": target.name, "sha256": sha256_bytes(target.read_bytes()),
        "bytes": target.stat().st_size, "weights_hash": weights_hash(model),
        "model_args": {**kwargs, "in_channels": data.channels, "num_classes": data.num_classes,
                       "input_size": data.image_size},
        "clean_test_accuracy": test_accuracy(model, data.x_test, data.y_test), "n_test": len(data.y_test),
        "source": {"kind": manifest["kind"], "run_id": manifest["run_id"], "git_commit": manifest.get("git_commit"),
                   "checkpoint": f"checkpoints/{checkpoint.name}", "label": label},
        "reference": {"suite": card.suite, "n": card.n, "curve": str(card.robust["curve"].iloc[0]),
                      "clean_accuracy": card.clean_accuracy,
                      "robust_accuracy": [{"epsilon": float(e), "robust_accuracy": float(a), "ci_low": float(lo),
                                           "ci_high": float(hi)} for e, a, lo, hi in
                                          zip(worst["epsilon"], worst["robust_accuracy"], worst["ci_low"],
                                              worst["ci_high"])]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add", nargs=3, action="append", metavar=("RUN_DIR", "LABEL", "TAG"), required=True)
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="default: the package's pretrained/")
    parser.add_argument("--data-root", default=None, help="else the run's own data_root")
    parser.add_argument("--which", choices=["final", "best"], default="final", help="which checkpoint")
    parser.add_argument("--n-examples", type=int, default=1000, help="test images the reference scorecard attacks")
    parser.add_argument("--attacks", default=None, help="the reference scorecard's attacks, comma-separated "
                        "(default: the benchmark's default suite, so references compare with default scorecards)")
    parser.add_argument("--eps", default=None, help="its epsilons (default: the benchmark's, by dataset)")
    args = parser.parse_args(argv)
    args.attacks = [a for a in args.attacks.split(",") if a] if args.attacks else None
    args.eps = [float(e) for e in args.eps.split(",")] if args.eps else None
    entries = {(e["model"], e["tag"]): e for e in read_index(args.out)}
    try:
        for run_dir, label, tag in args.add:
            entry = make_entry(Path(run_dir), label, tag, args.out, args)
            entries[(entry["model"], entry["tag"])] = entry
            print(f"{entry['file']}: sha256 {entry['sha256'][:16]}..., {entry['bytes']:,} bytes, clean test accuracy "
                  f"{entry['clean_test_accuracy']:.4f} (n={entry['n_test']})")
    except UsageError as err:
        print(f"make-pretrained: error: {err}", file=sys.stderr)
        return 2
    write_json(args.out / INDEX, {"format": 1, "models": [entries[k] for k in sorted(entries)]})
    print(f"wrote {args.out / INDEX} ({len(entries)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
