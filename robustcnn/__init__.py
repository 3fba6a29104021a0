"""robustcnn: train CNNs, measure how well they generalize and how easily they are fooled.

    import robustcnn as rc
    data = rc.load_dataset("digits", image_size=28)
    model = rc.create_model("lenet5", dataset=data)
    result = rc.train(model, data, rc.TrainConfig(epochs=10))
    evaluation = rc.evaluate_model(model, data, attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2])
    evaluation.robust  # DataFrame: model, attack, threat_model, epsilon, robust_accuracy, n
"""
from __future__ import annotations

from robustcnn.attacks import AttackConfig, ThreatModel, evaluate_robustness, list_attacks
from robustcnn.benchmark import Scorecard, benchmark, write_benchmark
from robustcnn.config import load_config
from robustcnn.data import DataBundle, DatasetName, load_dataset
from robustcnn.errors import UsageError
from robustcnn.experiments.adversarial import (
    AdversarialStudyConfig,
    EvaluationConfig,
    evaluate_model,
    run_adversarial_study,
)
from robustcnn.experiments.common import DataSpec, ModelSpec
from robustcnn.experiments.training import TrainRunConfig, run_train
from robustcnn.lint import lint_evaluation
from robustcnn.models import count_parameters, create_model, list_models, register_model
from robustcnn.report import redraw as report
from robustcnn.train import AdversarialTraining, TrainConfig, TrainResult, seed_everything, train

__version__ = "0.1.0"

__all__ = [
    "AdversarialStudyConfig", "AdversarialTraining", "AttackConfig", "DataBundle", "DataSpec", "DatasetName",
    "EvaluationConfig", "ModelSpec", "Scorecard", "ThreatModel", "TrainConfig", "TrainResult", "TrainRunConfig",
    "UsageError", "benchmark", "count_parameters", "create_model", "evaluate_model", "evaluate_robustness",
    "lint_evaluation", "list_attacks", "list_models", "load_config", "load_dataset", "register_model", "report",
    "run_adversarial_study", "run_train", "seed_everything", "train", "write_benchmark",
]
