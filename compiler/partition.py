"""Partitions: which part of the system runs each layer of a model.

A model file records a ``where`` per node (``"mcu"`` or ``"accel"``, the exporter's split);
:func:`partition` returns the same model with another split, chosen by name, so that one
trained model runs under every split on the same build (``build.py --partition``,
``python -m compiler.firmware_blob --partition``, ``CIM_SIM_PARTITION`` in the benches):

``file``
    As the model file says (the exporter puts the first convolution, the max pooling, the
    average pooling and the classifier on the MCU: the reference system's split).
``stem``
    The file's split with the MCU's leading layers, the ones before the first accelerator
    layer (the first convolution on the raw pixels and the max pooling), moved to the
    accelerator: the MCU writes the image and runs the layers after the accelerator's part.
``whole``
    Every layer on the accelerator: the first convolution through the image buffer and an
    im2col layer (where the configuration has one), the average pooling and the classifier
    as one raw layer whose logits and class the MCU reads from registers; the MCU writes the
    image and reads the result, nothing else.
``mcu``
    Every layer on the MCU: the system without the accelerator, the baseline a user would
    otherwise pick.

The integer arithmetic does not depend on the split (``contract/README.md``), so every
partition computes the same logits; the compiler refuses, by name, a layer the chosen
configuration cannot run.
"""

from __future__ import annotations

import copy

from model import golden

__all__ = ["PARTITIONS", "accel_outputs", "partition"]

PARTITIONS = {
    "file": "as the model file says",
    "stem": "the leading MCU layers (first convolution, max pooling) on the accelerator too",
    "whole": "every layer on the accelerator (the MCU writes the image, reads the class)",
    "mcu": "every layer on the MCU (no accelerator)",
}


def partition(model: golden.IntModel, name: str) -> golden.IntModel:
    """``model`` with the split ``name`` (module docstring); :class:`ValueError` names the
    valid ones, or why the split does not apply to this model."""
    if name not in PARTITIONS:
        raise ValueError(f"unknown partition {name!r}; valid: "
                         + ", ".join(f"{k} ({v})" for k, v in PARTITIONS.items()))
    if name == "file":
        return model
    manifest = copy.deepcopy(model.manifest)
    nodes = manifest["nodes"]
    if name in ("mcu", "whole"):
        for n in nodes:
            n["where"] = name.replace("whole", "accel")
    else:
        first = next((i for i, n in enumerate(nodes) if n["where"] == "accel"), None)
        if first is None:
            raise ValueError(f"{model.path}: partition 'stem' moves the layers before the "
                             "first accelerator layer, and this model has none")
        for n in nodes[:first]:
            if n["op"] not in ("conv", "maxpool"):
                raise ValueError(f"{model.path}: partition 'stem' cannot move layer "
                                 f"{n['name']!r} ({n['op']}) to the accelerator")
            n["where"] = "accel"
    return golden.IntModel(manifest, model.arrays, model.path)


def accel_outputs(model: golden.IntModel) -> list[str]:
    """Tensors of the accelerator's layers that the MCU reads back (inputs of its layers)."""
    accel = {n["name"] for n in model.nodes if n["where"] == "accel"}
    return sorted({i for n in model.nodes if n["where"] != "accel" for i in n["inputs"]
                   if i in accel})
