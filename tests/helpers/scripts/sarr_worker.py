"""A small SARR run for subprocess tests; can SIGKILL itself during round 2.

    python tests/helpers/scripts/sarr_worker.py OUT_DIR MODEL_DIR [--kill relabel|train] [--rounds 3]

``--kill relabel``: dies right after the 2nd relabel batch of round 2 is written.
``--kill train``: dies right after round 2 saves its checkpoint at step 2.
Run with ``accelerate launch`` for several processes (``--relabel-only`` then relabels the
tiny rows once and writes the outputs to OUT_DIR/outputs.json from the main process).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers.sarr import CLASSES, tiny_rows  # noqa: E402
from rdmldg_hf.generation import GenerationSettings, ModelBackend, process_state  # noqa: E402
from rdmldg_hf.models import load_model_and_processor  # noqa: E402
from rdmldg_hf.protocol import lodo_split  # noqa: E402
from rdmldg_hf.trainers import relabel as relabel_module  # noqa: E402

ROWS_PER_DOMAIN = 4
KILL_STEP = 2


class KillAfterSave(TrainerCallback):
    """SIGKILL the process once round 2 has saved its checkpoint at ``KILL_STEP``."""

    def on_save(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == "round-2" and state.global_step == KILL_STEP:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_during_relabel() -> None:
    """SIGKILL the process right after the 2nd batch of round 2 is written."""
    append = relabel_module.RelabelStore.append
    written = {"count": 0}

    def append_then_die(self, *args, **kwargs):
        append(self, *args, **kwargs)
        if self.folder.name == "round-2":
            written["count"] += 1
            if written["count"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    relabel_module.RelabelStore.append = append_then_die


def run_sarr(out_dir: str, model_dir: str, kill: str | None, rounds: int) -> None:
    from rdmldg_hf.trainers import SARRConfig, SARRTrainer

    model, processor = load_model_and_processor(model_dir)
    args = SARRConfig(
        output_dir=out_dir,
        num_rounds=rounds,
        max_steps=4,
        round_max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        relabel_batch_size=4,
        relabel_max_new_tokens=12,
        save_steps=KILL_STEP,
        logging_steps=1,
        report_to="none",
        activation_checkpointing=False,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if kill == "relabel":
        kill_during_relabel()
    split = lodo_split(tiny_rows(ROWS_PER_DOMAIN), "rot30")
    trainer = SARRTrainer(
        model,
        args,
        train_dataset=split.train,
        eval_dataset=split.validation,
        processing_class=processor,
        split_record=split.record(),
        callbacks=[KillAfterSave()] if kill == "train" else None,
    )
    trainer.train()
    trainer.save_model()


def relabel_only(out_dir: str, model_dir: str) -> None:
    state = process_state()
    model, processor = load_model_and_processor(model_dir)
    rows = tiny_rows(ROWS_PER_DOMAIN)
    store = relabel_module.RelabelStore(Path(out_dir) / "store", state.process_index)
    settings = GenerationSettings(batch_size=3, max_new_tokens=10)
    outputs = relabel_module.relabel(ModelBackend(model, processor), rows, CLASSES, settings, store)
    if state.is_main_process:
        Path(out_dir, "outputs.json").write_text(json.dumps({"processes": state.num_processes, "outputs": outputs}))
    state.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--kill", choices=["relabel", "train"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relabel-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.relabel_only:
        relabel_only(args.out_dir, args.model_dir)
    else:
        run_sarr(args.out_dir, args.model_dir, args.kill, args.rounds)


if __name__ == "__main__":
    main()
