"""robustcnn: train CNNs, measure how well they generalize and how easily they are fooled.

    import robustcnn as rc
    data = rc.load_dataset("digits", image_size=28)
    model = rc.create_model("lenet5", dataset=data)
    result = rc.train_model(model, data, rc.TrainConfig(epochs=10))
    evaluation = rc.evaluate_model(model, data, attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2])
    evaluation.robust  # DataFrame: model, attack, threat_model, epsilon, robust_accuracy, n, curve
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Lazy exports (PEP 562): `import robustcnn` imports nothing heavy (no torch, no matplotlib), so the CLI's
# --help is fast and a notebook's plotting settings are untouched until a function is used. No export shares
# a submodule's name: robustcnn.train, robustcnn.benchmark and robustcnn.report stay modules.
_EXPORTS = {
    "robustcnn.api": ["attack"],
    "robustcnn.attacks": ["AttackConfig", "ThreatModel", "list_attacks", "register_attack"],
    "robustcnn.benchmark": ["Scorecard", "write_benchmark", ("benchmark_model", "benchmark")],
    "robustcnn.config": ["load_config"],
    "robustcnn.data": ["DataBundle", "DatasetName", "load_dataset"],
    "robustcnn.devices": ["apply_threads", "resolve_device", "resolve_threads", "seed_everything"],
    "robustcnn.errors": ["UsageError"],
    "robustcnn.evaluation": ["Curve", "Evaluation", "RobustnessResult", "evaluate_model", "evaluate_robustness"],
    "robustcnn.experiments.adversarial": ["AdversarialStudyConfig", "EvaluationConfig", "run_adversarial_study"],
    "robustcnn.experiments.common": ["DataSpec", "ModelSpec"],
    "robustcnn.experiments.training": ["TrainRunConfig", "run_train"],
    "robustcnn.lint": ["lint_evaluation"],
    "robustcnn.models": ["count_parameters", "create_model", "list_models", "register_model"],
    "robustcnn.report": [("redraw_report", "redraw")],
    "robustcnn.train": ["AdversarialTraining", "TrainConfig", "TrainResult", ("train_model", "train")],
}
_WHERE = {(e if isinstance(e, str) else e[0]): (module, e if isinstance(e, str) else e[1])
          for module, names in _EXPORTS.items() for e in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'robustcnn' has no attribute '{name}'")
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
