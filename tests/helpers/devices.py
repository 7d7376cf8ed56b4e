"""Tests that pass on any device: inputs built on the model's device, devices compared by intent, tolerances that
name the precision they assume.

A Trainer moves its model to the GPU when there is one, and ``DGClassifier``, ``rdmldg eval`` and ``rdmldg analyze``
load theirs there (in bfloat16 where supported): test code that calls such a model takes its inputs through
:func:`model_inputs` (or :func:`on_model_device`), and compares numbers from two models after putting them in one
place (:func:`placed_like`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from accelerate.utils import send_to_device

# float32 results of the same computation in another order (micro-batches or task sub-batches instead of one
# padded batch, another device's kernels): after a step of SGD the weights agreed to 1e-6 on a CPU and to 1.8e-5
# on a GPU.
FP32_REORDERED = {"rtol": 1e-4, "atol": 5e-5}


def on_model_device(batch: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Every tensor of ``batch`` (nested ones too, e.g. MTCT's task sub-batches) on ``model``'s device, as the
    Trainer puts a batch before a step."""
    return send_to_device(dict(batch), next(model.parameters()).device)


def model_inputs(batch: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The forward-pass inputs of a collated MTCT batch (no ``labels``, no ``mtct_*`` bookkeeping) on ``model``'s
    device."""
    kept = {key: value for key, value in batch.items() if key != "labels" and not key.startswith("mtct_")}
    return on_model_device(kept, model)


def placed_like(model: torch.nn.Module, reference: torch.nn.Module) -> torch.nn.Module:
    """``model`` on the device and in the dtype of ``reference``: two models compared where one of them runs."""
    parameter = next(reference.parameters())
    return model.to(device=parameter.device, dtype=parameter.dtype)
