"""One MTCT optimizer step on a fixed global batch; run under `accelerate launch` or plain python.

    python tests/helpers/scripts/mtct_multiprocess.py MODEL_DIR OUT_DIR PER_DEVICE_BATCH [GRAD_ACCUM]

Rank 0 writes OUT_DIR/result.json (the first log entry) and OUT_DIR/weights.pt (weights after the step).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.mtct import config, tiny_dataset  # noqa: E402
from rdmldg_hf.models import load_model_and_processor  # noqa: E402
from rdmldg_hf.trainers import MTCTTrainer  # noqa: E402


def main(model_dir: str, out_dir: str, per_device_batch: int, accumulation: int = 1) -> tuple[dict, dict]:
    """Train one step; returns (first log entry, weights after the step) and writes them on rank 0."""
    model, processor = load_model_and_processor(model_dir)
    args = config(
        out_dir,
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.1,
        max_grad_norm=1e9,  # reported, never clipped
        use_cpu=True,  # the multi-process run is CPU processes (gloo): every run compared is on the CPU
    )
    trainer = MTCTTrainer(model, args=args, train_dataset=tiny_dataset(16), processing_class=processor)
    trainer.train()
    entry = trainer.state.log_history[0]
    result = {
        "processes": trainer.accelerator.num_processes,
        **{k: v for k, v in entry.items() if isinstance(v, (int, float))},
    }
    weights = {
        k: v.detach().cpu().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).named_parameters()
    }
    if trainer.accelerator.is_main_process:
        with open(os.path.join(out_dir, "result.json"), "w") as handle:
            json.dump(result, handle)
        torch.save(weights, os.path.join(out_dir, "weights.pt"))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return result, weights


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
