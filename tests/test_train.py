"""The trainer: determinism, learning, schedules, eval-mode metrics, validation-only selection, adversarial
training (against a bare-torch PGD written here), BatchNorm hygiene and bad values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustcnn.data import DataBundle, load_dataset, split_validation
from robustcnn.errors import UsageError
from robustcnn.models import create_model, list_models
from robustcnn.train import AdversarialTraining, Schedule, TrainConfig, lr_factor, seed_everything, train

QUICK = TrainConfig(epochs=3, batch_size=64, lr=3e-3)


def fit(data, cfg=QUICK, seed=0, name="lenet5", **kwargs):
    seed_everything(seed)
    model = create_model(name, dataset=data, **kwargs)
    return model, train(model, data, cfg, seed=seed, device="cpu", progress=False)


@pytest.fixture(scope="module")
def digits8() -> DataBundle:
    return load_dataset("digits")


def bare_pgd_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20) -> float:
    """Madry et al.'s L-inf PGD written out in plain torch (the independent reference; not robustcnn.perturb)."""
    model.eval()
    g = torch.Generator().manual_seed(123)
    x_adv = (x + eps * (torch.rand(x.shape, generator=g) * 2 - 1)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_same_seed_gives_identical_history(digits28):
    cfg = TrainConfig(epochs=2, batch_size=64, crop_padding=2, flip=True)
    _, a = fit(digits28, cfg)
    _, b = fit(digits28, cfg)
    cols = ["train_loss", "train_accuracy", "train_accuracy_running", "test_loss", "test_accuracy"]
    assert a.history[cols].equals(b.history[cols])
    _, c = fit(digits28, cfg, seed=1)
    assert not a.history[cols].equals(c.history[cols])


def test_history_columns_and_learning(digits28):
    model, result = fit(digits28, TrainConfig(epochs=4, batch_size=32, lr=3e-3))
    h = result.history
    assert list(h.columns) == ["epoch", "train_loss", "train_accuracy", "train_loss_running", "train_accuracy_running",
                               "test_loss", "test_accuracy", "seconds", "lr", "eval_seconds", "train_eval_n"]
    assert h["test_accuracy"].between(0, 1).all() and h["train_accuracy"].between(0, 1).all()
    assert h["test_accuracy"].iloc[-1] > 0.8 and h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert not model.training
    assert set(result.final_state) == set(model.state_dict())
    assert result.monitor is None and result.best_epoch is None and result.best_state is None


def test_train_accuracy_is_eval_mode_on_clean_training_images(digits8):
    """Dropout 0.5 and augmentation make the running (train-mode) average differ; the reported train figure
    must equal model.eval() on the clean training images, computed here in bare torch."""
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, crop_padding=1)
    model, result = fit(digits8, cfg, name="mlp", width=64, dropout=0.5)
    final = result.history.iloc[-1]
    model.eval()
    with torch.no_grad():
        scores = model(digits8.x_train)
    assert final["train_eval_n"] == len(digits8.y_train)
    assert final["train_accuracy"] == pytest.approx((scores.argmax(1) == digits8.y_train).float().mean().item(), abs=1e-6)
    assert final["train_loss"] == pytest.approx(F.cross_entropy(scores, digits8.y_train).item(), rel=1e-4)
    assert abs(final["train_accuracy"] - final["train_accuracy_running"]) > 0.01  # the two really differ here


def test_validation_split_is_held_out_and_measured(digits8):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, val_fraction=0.2)
    model, result = fit(digits8, cfg, name="mlp", width=32)
    keep, held = split_validation(digits8.y_train, 0.2, seed=0)
    h = result.history
    assert (h["train_eval_n"] == len(keep)).all() and len(keep) + len(held) == len(digits8.y_train)
    model.eval()
    with torch.no_grad():
        val_acc = (model(digits8.x_train[held]).argmax(1) == digits8.y_train[held]).float().mean().item()
    assert h["val_accuracy"].iloc[-1] == pytest.approx(val_acc, abs=1e-6)
    assert result.monitor == "val_accuracy" and result.best_epoch == int(h.loc[h["val_accuracy"].idxmax(), "epoch"])


@pytest.mark.parametrize("adversarial", [None, AdversarialTraining(epsilon=0.1, steps=2, eval_examples=100,
                                                                     eval_steps=3)], ids=["standard", "pgd"])
def test_selection_never_sees_the_test_set(digits8, adversarial):
    """Scrambled test labels change every test column and nothing that is chosen: best epoch, stopping epoch,
    best state."""
    cfg = TrainConfig(epochs=12, batch_size=64, lr=1e-2, val_fraction=0.2, early_stopping=3, adversarial=adversarial)
    scrambled = DataBundle(digits8.name, digits8.x_train, digits8.y_train, digits8.x_test,
                           (digits8.y_test + torch.randint(1, 10, digits8.y_test.shape,
                                                           generator=torch.Generator().manual_seed(0))) % 10,
                           digits8.class_names)
    _, real = fit(digits8, cfg, name="mlp", width=32)
    _, fake = fit(scrambled, cfg, name="mlp", width=32)
    assert not real.history["test_accuracy"].equals(fake.history["test_accuracy"])
    assert real.best_epoch == fake.best_epoch and len(real.history) == len(fake.history)
    assert all(torch.equal(real.best_state[k], fake.best_state[k]) for k in real.best_state)
    assert real.monitor in ("val_accuracy", "robust_val_accuracy")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adadelta"])
def test_every_optimizer_trains(digits28, optimizer):
    _, result = fit(digits28, TrainConfig(epochs=2, batch_size=32, optimizer=optimizer))
    assert result.history["train_loss"].iloc[-1] < 2.3


def test_schedules():
    step = TrainConfig(epochs=30, schedule=Schedule.STEP, step_epochs=10, step_gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    cosine = TrainConfig(epochs=10, schedule=Schedule.COSINE)
    assert lr_factor(cosine, 0) == 1 and lr_factor(cosine, 5) == pytest.approx(0.5)


def test_early_stopping_stops(digits8):
    _, result = fit(digits8, TrainConfig(epochs=50, batch_size=64, lr=1e-9, early_stopping=2, val_fraction=0.1),
                    name="mlp", width=16)
    assert len(result.history) == 3  # lr 1e-9: epoch 1 is never beaten, so it stops after epochs 2 and 3


def test_lenet5_1998_trains_with_the_map_loss(digits28):
    _, result = fit(digits28, TrainConfig(epochs=3, batch_size=32, lr=3e-3), name="lenet5_1998")
    assert result.history["test_accuracy"].iloc[-1] > 0.5


def test_adversarial_training_records_robust_accuracy(digits28):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, val_fraction=0.1,
                      adversarial=AdversarialTraining(epsilon=0.1, steps=2, eval_examples=50, eval_steps=3))
    _, result = fit(digits28, cfg)
    assert result.monitor == "robust_val_accuracy"
    for col in ("robust_val_accuracy", "robust_test_accuracy", "train_epsilon"):
        assert result.history[col].between(0, 1).all()
    fgsm = TrainConfig(epochs=1, batch_size=64, adversarial=AdversarialTraining(method="fgsm", epsilon=0.1,
                                                                                eval_examples=20, eval_steps=2))
    assert fgsm.adversarial.resolved_step_size == pytest.approx(0.125)
    _, result = fit(digits28, fgsm)
    assert "robust_val_accuracy" not in result.history and result.monitor is None


def test_pgd_training_beats_standard_training_under_a_bare_torch_pgd(digits8):
    eps = 0.2
    cfg = TrainConfig(epochs=8, batch_size=64, lr=3e-3)
    standard, _ = fit(digits8, cfg, name="mlp", width=64)
    robust, _ = fit(digits8, TrainConfig(epochs=8, batch_size=64, lr=3e-3, adversarial=AdversarialTraining(
        epsilon=eps, steps=5, eval_examples=20, eval_steps=2)), name="mlp", width=64)
    x, y = digits8.x_test, digits8.y_test
    assert bare_pgd_accuracy(robust, x, y, eps) > bare_pgd_accuracy(standard, x, y, eps) + 0.2


def _batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("mode,forwards_per_batch", [("eval", 1), ("train", 4)])
def test_attack_generation_leaves_batchnorm_statistics_alone(digits8, mode, forwards_per_batch):
    """In eval mode only the update step moves BatchNorm's statistics: one forward per batch; attack_mode
    'train' adds one per PGD step (3 here)."""
    adv = AdversarialTraining(epsilon=0.1, steps=3, eval_examples=20, eval_steps=2, attack_mode=mode)
    model, _ = fit(digits8, TrainConfig(epochs=2, batch_size=128, lr=3e-3, adversarial=adv), name="cnn5", width=2)
    n_batches = math.ceil(len(digits8.y_train) / 128)
    counts = {int(bn.num_batches_tracked) for bn in _batchnorms(model)}
    assert counts == {2 * n_batches * forwards_per_batch}


@pytest.mark.parametrize("name", list_models())
def test_model_constructors_leave_batchnorm_buffers_untouched(name):
    seed_everything(0)
    model = create_model(name, dataset="cifar10")
    for bn in _batchnorms(model):
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test_train_eval_subset_is_fixed_and_at_least_2000(digits8):
    n = 2400
    g = torch.Generator().manual_seed(0)
    big = DataBundle("synthetic", torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10, digits8.x_test,
                     digits8.y_test, digits8.class_names)
    _, result = fit(big, TrainConfig(epochs=1, batch_size=256, train_eval_examples=2000), name="mlp", width=8)
    assert (result.history["train_eval_n"] == 2000).all()
    with pytest.raises(UsageError, match="train_eval_examples"):
        fit(big, TrainConfig(epochs=1, train_eval_examples=1999), name="mlp", width=8)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0), dict(weight_decay=-1.0),
                                 dict(lr=float("nan")), dict(lr=float("inf")), dict(weight_decay=float("nan")),
                                 dict(momentum=-1.0), dict(momentum=1.0), dict(step_gamma=0.0), dict(epochs=2.5),
                                 dict(train_eval_examples=0), dict(val_fraction=-0.1), dict(val_fraction=0.6),
                                 dict(val_fraction=float("nan")), dict(val_fraction=1.0), dict(optimizer="sgdd"),
                                 dict(early_stopping=5)])
def test_bad_values_are_usage_errors(bad):
    with pytest.raises(UsageError) as err:
        TrainConfig(**bad)
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


@pytest.mark.parametrize("bad", [dict(epsilon=2.0), dict(epsilon=float("nan")), dict(steps=0), dict(eval_examples=0),
                                 dict(step_size=float("nan")), dict(step_size=0.0), dict(warmup_epochs=-1),
                                 dict(attack_mode="sometimes")])
def test_bad_adversarial_values_are_usage_errors(bad):
    with pytest.raises(UsageError, match=next(iter(bad))):
        AdversarialTraining(**bad)


def test_selection_without_validation_is_a_usage_error(digits8):
    from robustcnn.experiments.common import Checkpoint, ModelSpec

    with pytest.raises(UsageError, match="val_fraction"):
        TrainConfig(early_stopping=3)
    with pytest.raises(UsageError, match="val_fraction"):
        ModelSpec("mlp", evaluate=Checkpoint.BEST)
    ModelSpec("mlp", evaluate=Checkpoint.BEST, train=TrainConfig(val_fraction=0.1))
    tiny = load_dataset("digits", train_subset=100)
    with pytest.raises(UsageError, match="no validation example for class"):
        fit(tiny, TrainConfig(epochs=1, val_fraction=0.02), name="mlp", width=8)


def test_device_auto_falls_back_to_cpu():
    from robustcnn.train import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
