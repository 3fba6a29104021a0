"""Small synthetic run folders in the real layout (tables written by robustcnn.results, manifest as a run writes
it), so report and figure tests run in seconds without training or attacks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from robustcnn.results import write_json, write_table

EPS = [0.0, 0.1, 0.2, 0.3]
ROBUST = {"fgsm": [0.9, 0.6, 0.3, 0.1], "pgd": [0.9, 0.4, 0.1, 0.0], "worst_case": [0.9, 0.4, 0.1, 0.0]}


def model_spec(name: str, adversarial: bool) -> dict:
    adv = {"method": "pgd", "epsilon": 0.1, "steps": 7, "step_size": None, "eval_examples": 40, "eval_steps": 10,
           "warmup_epochs": 0, "attack_mode": "eval"} if adversarial else None
    return {"name": name, "arch": "lenet5", "kwargs": {}, "evaluate": "final",
            "train": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "schedule": "constant",
                      "weight_decay": 0.0, "val_fraction": 0.0, "crop_padding": 0, "flip": False,
                      "adversarial": adv}}


def history(epochs: int, adversarial: bool) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    h = pd.DataFrame({"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e,
                      "train_loss_running": 1.2 / e, "train_accuracy_running": 1 - 0.7 / e, "test_loss": 1.1 / e,
                      "test_accuracy": 0.95 - 0.5 / e, "seconds": 1.0, "train_eval_n": 100})
    if adversarial:
        h["train_epsilon"] = 0.1
        h["robust_test_accuracy"] = 0.6 - 0.3 / e
    return h


def adversarial_run(root: Path, *, models: tuple[str, ...] = ("lenet5", "lenet5-pgd"), n: int = 60,
                    clean_n: int = 500, radii: bool = False, record_settings: bool = True,
                    threat: str = "linf") -> Path:
    """A finished `study adversarial` run folder: lenet5 (standard) and lenet5-pgd (adversarially trained)."""
    run = root / "run"
    clean = pd.DataFrame([{"model": m, "split": s, "accuracy": 0.9, "n": 1297 if s == "train" else clean_n}
                          for m in models for s in ("train", "test")])
    attacks = {"linf": ["fgsm", "pgd", "worst_case"], "l2": ["l2-fgm", "l2-pgd", "worst_case_l2"]}[threat]
    robust = pd.DataFrame([{"model": m, "suite": "quick", "attack": a, "threat_model": threat, "epsilon": e,
                            "robust_accuracy": acc, "n": n, "curve": "cumulative"}
                           for m in models for a, base in zip(attacks, ROBUST.values()) for e, acc in zip(EPS, base)])
    lint = pd.DataFrame([{"model": m, "suite": "quick", "check": "eval_mode", "status": "PASS", "detail": "ok"}
                         for m in models])
    cost = pd.DataFrame([{"model": m, "suite": "quick", "attack": a, "seconds": 1.0, "forward_passes": 10,
                          "backward_passes": 5, "n": n} for m in models for a in attacks[:2]])
    rng = np.random.default_rng(0)
    samples = pd.DataFrame([{"model": m, "attack": a, "threat_model": threat, "epsilon": 0.3, "index": i,
                             "correct": False, "perturbation_linf": 0.1 * (1 + i % 3),
                             "perturbation_l2": float(rng.uniform(1, 3))}
                            for m in models for a in attacks[:2] for i in range(20)])
    for name, df in (("clean_accuracy", clean), ("robust_accuracy", robust), ("lint", lint), ("attack_cost", cost)):
        write_table(run, name, df, title=name)
    write_table(run, "robust_samples", samples, markdown=False)
    # history files in the order a directory listing gives them (lenet5-pgd sorts before lenet5)
    for m in models:
        write_table(run, f"history_{m}", history(30, m.endswith("pgd")).assign(model=m), title=m)
    if radii:
        write_table(run, "radii", pd.DataFrame([{"model": m, "index": i, "threat_model": threat,
                                                 "radius": [0.0, np.inf, 0.05 * (1 + i % 5)][min(i, 2)]}
                                                for m in models for i in range(n)]), markdown=False)
    settings = [{"name": a, "threat_model": threat, "restarts": 1, **({"steps": 40, "step_size": 0.0625,
                                                                        "random_start": True} if "pgd" in a else {})}
                for a in attacks[:2]]
    manifest = {"kind": "adversarial", "run_id": "test-run", "config": {
        "data": {"dataset": "digits"}, "seed": 0, "models": [model_spec(m, m.endswith("pgd")) for m in models],
        "evaluation": {"attacks": [{"name": a, "steps": None, "step_size": None, "random_start": None,
                                    "restarts": 1, "options": {}} for a in attacks[:2]],
                       "suite": None, "n_examples": n, "lint": True, "lint_examples": 40}},
        "seed": 0, "versions": {"torch": "x"}, "device": "cpu (test)", "threads": 1, "wall_seconds": 1.0,
        "git_commit": None, **({"attack_settings": settings} if record_settings else {})}
    write_json(run / "manifest.json", manifest)
    return run


def gallery_npz(models: tuple[str, ...] = ("lenet5",), wrong: int = 1) -> dict[str, np.ndarray]:
    """Four examples per model, labels 3, 7, 5, 1; example `wrong` is misclassified before any attack."""
    rng = np.random.default_rng(1)
    labels = np.array([3, 7, 5, 1])
    arrays = {"attack": np.array("pgd"), "epsilon": np.array(0.3), "models": np.array(models),
              "class_names": np.array([str(i) for i in range(10)])}
    for m in models:
        x = rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
        clean_pred = labels.copy()
        clean_pred[wrong] = 2
        arrays.update({f"x__{m}": x, f"adv__{m}": np.clip(x + rng.uniform(-0.1, 0.1, x.shape), 0, 1),
                       f"labels__{m}": labels, f"clean_pred__{m}": clean_pred,
                       f"clean_conf__{m}": np.full(4, 0.9), f"adv_pred__{m}": np.array([8, 8, 8, 1]),
                       f"adv_conf__{m}": np.full(4, 0.6)})
    return arrays
