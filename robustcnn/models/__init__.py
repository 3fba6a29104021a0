"""The model zoo: `create_model(name, dataset=...)`, `list_models(pattern)`, `@register_model` (timm's pattern).

Every model takes (N, C, H, W) images in [0,1] and returns (N, classes) scores whose argmax is the
prediction; any input normalization happens inside the model, so attacks see raw pixels.
"""
from __future__ import annotations

from typing import Any

from robustcnn.data import CHANNELS, CLASS_NAMES, IMAGEFOLDER_PREFIX, NATIVE_SIZE, DataBundle
from robustcnn.errors import UsageError, check_choice

# Import the families so their factories register themselves.
from robustcnn.models import alexnet, cnn5, lenet, mlp, neocognitron, perceptron, resnet  # noqa: E402,F401
from robustcnn.models.common import MODELS, Classifier, count_parameters, register_model

__all__ = ["MODELS", "Classifier", "count_parameters", "create_model", "describe_models", "list_models",
           "model_input_size", "register_model"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. list_models('lenet*')."""
    return MODELS.names(pattern)


def model_input_size(name: str) -> int | None:
    """The fixed square input size a model needs (load the dataset at this size), or None for any size."""
    return MODELS.get(name).meta.get("input_size")


def create_model(name: str, *, dataset: str | DataBundle | None = None, pretrained: str | None = None,
                 **kwargs: Any) -> Classifier:
    """Build a registered model for a dataset (default digits): channels, classes, input size and normalization
    follow it.

    kwargs go to the factory (e.g. width=16 for the width-scalable families); in_channels, num_classes,
    input_size, mean and std may be given to override what the dataset implies.
    pretrained: a shipped tag ("mnist", "mnist-pgd", ...; robustcnn.zoo): the architecture the weights were
    trained as, their state_dict loaded after checking its sha256, returned in eval mode.
    """
    entry = MODELS.get(name)
    if pretrained is not None:
        return _pretrained(name, pretrained, dataset, kwargs)
    dataset = "digits" if dataset is None else dataset
    if isinstance(dataset, DataBundle):
        mean, std = dataset.channel_stats()
        implied: dict[str, Any] = dict(in_channels=dataset.channels, num_classes=dataset.num_classes, mean=mean, std=std)
    else:
        if not dataset.startswith(IMAGEFOLDER_PREFIX):
            check_choice("dataset", dataset, list(CHANNELS))
        implied = dict(in_channels=CHANNELS.get(dataset, 3), num_classes=len(CLASS_NAMES.get(dataset, range(10))))
    if "input_size" not in kwargs:
        implied["input_size"] = entry.meta.get("input_size") or (
            dataset.image_size if isinstance(dataset, DataBundle) else NATIVE_SIZE.get(dataset, 32))
    if not entry.meta.get("normalize", True):
        implied.pop("mean", None), implied.pop("std", None)
    try:
        model = entry.factory(**{**implied, **kwargs})
    except TypeError as err:
        raise UsageError(f"{name}: bad model argument ({err})") from err
    model.model_name = name
    return model


def _pretrained(name: str, tag: str, dataset: str | DataBundle | None, kwargs: dict[str, Any]) -> Classifier:
    from robustcnn.model_files import load_weights_into
    from robustcnn.zoo import find_pretrained, pretrained_path, pretrained_state

    entry = find_pretrained(name, tag)
    model = create_model(name, dataset=entry["dataset"] if dataset is None else dataset,
                         **{**entry.get("model_args", {}), **kwargs})
    load_weights_into(model, pretrained_state(entry), pretrained_path(entry))
    return model.eval()


def describe_models(pattern: str = "*", dataset: str = "mnist") -> list[dict[str, Any]]:
    """Name, parameter count on `dataset`, and one-line description of every matching model."""
    rows = []
    for name in list_models(pattern):
        model = create_model(name, dataset=dataset)
        # every learned value, whether a gradient or the model's own rule (perceptron, neocognitron) learns it
        rows.append({"name": name, "parameters": count_parameters(model, trainable_only=False),
                     "description": MODELS.get(name).description})
    return rows
