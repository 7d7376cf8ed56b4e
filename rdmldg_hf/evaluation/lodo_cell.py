"""One cell of the leave-one-domain-out table: train an ablation row (a method) on a split's training rows.

The one code path that trains a cell, shared by the LODO runner (:mod:`.lodo`) and the sweeps
(:mod:`rdmldg_hf.experiments`). What is checked during training comes in as callbacks (checkpoint
selection, per-checkpoint records) and, for the SARR rows, ``stage_done`` after each stage.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from datasets import Dataset

from ..benchmarks import Benchmark
from ..methods import METHODS
from ..models import RunConfig
from ..trainers import MTCTConfig, SARRConfig

__all__ = ["cell_training_values", "train_cell"]

_MTCT_FIELDS = frozenset(f.name for f in fields(MTCTConfig))


def cell_training_values(output_dir: str | Path, *settings: Mapping[str, Any]) -> dict[str, Any]:
    """Training-config values of a cell: no checkpoints, reports or progress bars (the cell's callbacks check the
    model), then ``settings`` in order (later ones win)."""
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=None,
    )
    for setting in settings:
        values.update(setting)
    return values


def train_cell(
    method: str,
    model: Any,
    processor: Any,
    train: Dataset,
    values: Mapping[str, Any],
    *,
    benchmark: Benchmark,
    base_model: str,
    peft_config: Any = None,
    split_record: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    stage_done: Callable[[str, Any], dict[str, Any]] | None = None,
    mtct_stage: bool = True,
) -> tuple[Any, RunConfig]:
    """Train ``method`` (a :data:`~rdmldg_hf.methods.METHODS` row) on ``train``; returns the trained
    model and its run record (the trainer's, named after ``method``, on ``base_model``).

    ``values``: training-config fields (:func:`cell_training_values`); the MTCT rows read the ``MTCTConfig`` ones,
    the SARR rows every ``SARRConfig`` one. ``mtct_stage=False``: a SARR row whose ``model`` is already MTCT-trained.
    """
    from ..trainers import MTCTTrainer, SARRTrainer

    spec = METHODS[method]
    values = {**values, "mode": spec.mode, "benchmark": benchmark.name}
    if spec.trainer == "mtct":
        args = MTCTConfig(**{k: v for k, v in values.items() if k in _MTCT_FIELDS})
        trainer = MTCTTrainer(
            model,
            args=args,
            train_dataset=train,
            processing_class=processor,
            peft_config=peft_config,
            split_record=split_record,
            callbacks=list(callbacks),
        )
        trainer.train()
        return trainer.accelerator.unwrap_model(trainer.model), trainer.run_record(method, base_model)
    output_dir = Path(values["output_dir"])
    args = SARRConfig(
        **{
            **values,
            "overwrite_output_dir": True,
            "round_dataset_dir": str(output_dir / "dataset"),
            "mtct_stage": mtct_stage,
        }
    )
    trainer = SARRTrainer(
        model,
        args,
        train_dataset=train,
        processing_class=processor,
        peft_config=peft_config,
        split_record=split_record,
        stage_callback=stage_done,
        callbacks=list(callbacks),
    )
    trainer.train()
    run_config = trainer.run_record(method, base_model)
    run_config.settings["started_from"] = None if mtct_stage else spec.starts_from
    return trainer.model, run_config
