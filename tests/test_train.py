"""The trainer: determinism, learning, schedules, adversarial training, bad values."""
from __future__ import annotations

import pytest
import torch

from robustcnn.errors import UsageError
from robustcnn.models import create_model
from robustcnn.train import AdversarialTraining, Schedule, TrainConfig, lr_factor, seed_everything, train

QUICK = TrainConfig(epochs=3, batch_size=64, lr=3e-3)


def fit(data, cfg=QUICK, seed=0, name="lenet5"):
    seed_everything(seed)
    model = create_model(name, dataset=data)
    return model, train(model, data, cfg, seed=seed, device="cpu", progress=False)


def test_same_seed_gives_identical_history(digits28):
    cfg = TrainConfig(epochs=2, batch_size=64, crop_padding=2, flip=True)
    _, a = fit(digits28, cfg)
    _, b = fit(digits28, cfg)
    cols = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert a.history[cols].equals(b.history[cols])
    _, c = fit(digits28, cfg, seed=1)
    assert not a.history[cols].equals(c.history[cols])


def test_history_columns_and_learning(digits28):
    model, result = fit(digits28, TrainConfig(epochs=4, batch_size=32, lr=3e-3))
    h = result.history
    assert list(h.columns[:6]) == ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"]
    assert h["test_accuracy"].between(0, 1).all() and h["train_accuracy"].between(0, 1).all()
    assert h["test_accuracy"].iloc[-1] > 0.8 and h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert not model.training
    assert set(result.final_state) == set(model.state_dict())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adadelta"])
def test_every_optimizer_trains(digits28, optimizer):
    _, result = fit(digits28, TrainConfig(epochs=2, batch_size=32, optimizer=optimizer))
    assert result.history["train_loss"].iloc[-1] < 2.3


def test_schedules():
    step = TrainConfig(epochs=30, schedule=Schedule.STEP, step_epochs=10, step_gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    cosine = TrainConfig(epochs=10, schedule=Schedule.COSINE)
    assert lr_factor(cosine, 0) == 1 and lr_factor(cosine, 5) == pytest.approx(0.5)


def test_early_stopping_stops(digits28):
    _, result = fit(digits28, TrainConfig(epochs=50, batch_size=64, lr=1e-9, early_stopping=2))
    assert len(result.history) < 50


def test_lenet5_1998_trains_with_the_map_loss(digits28):
    _, result = fit(digits28, TrainConfig(epochs=3, batch_size=32, lr=3e-3), name="lenet5_1998")
    assert result.history["test_accuracy"].iloc[-1] > 0.5


def test_adversarial_training_records_robust_accuracy(digits28):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3,
                      adversarial=AdversarialTraining(epsilon=0.1, steps=2, eval_examples=50, eval_steps=3))
    _, result = fit(digits28, cfg)
    assert result.monitor == "robust_test_accuracy"
    assert result.history["robust_test_accuracy"].between(0, 1).all()
    fgsm = TrainConfig(epochs=1, batch_size=64, adversarial=AdversarialTraining(method="fgsm", epsilon=0.1,
                                                                                eval_examples=20, eval_steps=2))
    assert fgsm.adversarial.resolved_step_size == pytest.approx(0.125)
    fit(digits28, fgsm)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0), dict(weight_decay=-1.0)])
def test_bad_values_are_usage_errors(bad):
    with pytest.raises(UsageError):
        TrainConfig(**bad)
    with pytest.raises(UsageError, match="epsilon"):
        AdversarialTraining(epsilon=2.0)


def test_device_auto_falls_back_to_cpu():
    from robustcnn.train import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
