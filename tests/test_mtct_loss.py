"""The MTCT loss equals a hand computation from the model's logits (the paper's loss, arXiv 2602.23777)."""

import pytest
import torch

from helpers.devices import model_inputs, on_model_device
from helpers.mtct import config, load_tiny, tiny_dataset
from rdmldg_hf.data.training_rows import CLASSIFICATION, REASONING
from rdmldg_hf.trainers import MTCTTrainer, mtct_loss
from rdmldg_hf.trainers.losses import NamedSums, loss_metrics

B = 4  # images in the fixed batch; image 1 has no chain


def _hand_terms(model, batch):
    """Per row: (image index, task, summed NLL of the answer tokens, number of answer tokens), from logits."""
    with torch.no_grad():
        logits = model(**model_inputs(batch, model)).logits.double().cpu()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    rows = []
    for r in range(logits.shape[0]):
        nll, count = 0.0, 0
        for t in range(1, batch["labels"].shape[1]):
            target = int(batch["labels"][r, t])
            if target != -100:
                nll -= float(logp[r, t - 1, target])
                count += 1
        rows.append((int(batch["mtct_image_index"][r]), int(batch["mtct_task"][r]), nll, count))
    return rows


def _paper_loss(rows, num_units, normalization="per_sequence", w_cls=1.0, w_reason=1.0):
    chains = [(nll, n) for _, task, nll, n in rows if task == REASONING]
    mean_len = sum(n for _, n in chains) / max(len(chains), 1)
    total = 0.0
    for _, task, nll, n in rows:
        if task == CLASSIFICATION:
            total += w_cls * nll
        else:
            total += w_reason * nll / (n if normalization == "per_sequence" else mean_len)
    return total / num_units


def _trainer(tmp_path, **overrides):
    model, processor = load_tiny()
    with torch.no_grad():  # sharpen the random model so token NLLs differ and normalisations disagree
        model.lm_head.weight.mul_(40.0)
    args = config(tmp_path, per_device_train_batch_size=B, **overrides)
    return MTCTTrainer(model, args=args, train_dataset=tiny_dataset(), processing_class=processor)


def _batch(trainer, start=0, size=B):
    """A collated batch on the trainer's model's device (the Trainer moved the model there)."""
    units = [trainer.train_dataset[i] for i in range(start, start + size)]
    return on_model_device(trainer.data_collator(units), trainer.model)


CASES = [
    ("paired", "per_sequence", {}),
    ("paired", "per_token", {}),
    ("paired", "per_sequence", {"cls_weight": 0.5, "reasoning_weight": 2.0}),
    ("mixed", "per_sequence", {}),
    ("cls_only", "per_sequence", {}),
    ("reasoning_only", "per_sequence", {}),
    ("reasoning_only", "per_token", {}),
]


@pytest.mark.parametrize("mode,normalization,weights", CASES)
def test_loss_equals_hand_computation(tmp_path, mode, normalization, weights):
    trainer = _trainer(tmp_path, mode=mode, reasoning_normalization=normalization, **weights)
    start = len(trainer.train_dataset) - B if mode == "mixed" else 0  # mixed: end holds reasoning units
    batch = _batch(trainer, start)
    rows = _hand_terms(trainer.model, batch)
    tasks = [task for _, task, _, _ in rows]
    images = sorted({image for image, _, _, _ in rows})
    if mode == "paired":  # both rows of each image in the batch; image 1 has only its classification row
        assert len(images) == B and tasks.count(CLASSIFICATION) == B and tasks.count(REASONING) == B - 1
        assert (1, REASONING) not in [(i, t) for i, t, _, _ in rows]
    elif mode == "cls_only":
        assert tasks == [CLASSIFICATION] * B
    elif mode == "reasoning_only":
        assert tasks == [REASONING] * B and 1 not in images
    else:
        assert len(rows) == B
    w_cls, w_reason = weights.get("cls_weight", 1.0), weights.get("reasoning_weight", 1.0)
    expected = _paper_loss(rows, B, normalization, w_cls, w_reason)
    if REASONING in tasks:  # the batch tells the two normalisations apart
        other = _paper_loss(
            rows, B, "per_token" if normalization == "per_sequence" else "per_sequence", w_cls, w_reason
        )
        assert abs(other - expected) > 1e-4 * expected
    normalizer = trainer._get_num_items_in_batch([batch], trainer.args.device)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=normalizer)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Evaluation (no global normaliser) gives the same value for a single batch.
    trainer.model.eval()
    assert trainer.compute_loss(trainer.model, dict(batch)).item() == pytest.approx(expected, rel=1e-6)


def test_accumulated_micro_batches_sum_to_the_global_batch_loss(tmp_path):
    """Two micro-batches normalised by the whole optimised batch add up to the loss of their union."""
    for normalization in ("per_sequence", "per_token"):
        trainer = _trainer(tmp_path, reasoning_normalization=normalization)
        first, second = _batch(trainer, 0, 2), _batch(trainer, 2, 2)
        normalizer = trainer._get_num_items_in_batch([first, second], trainer.args.device)
        assert normalizer[0].item() == 4
        total = sum(
            trainer.compute_loss(trainer.model, dict(b), num_items_in_batch=normalizer) for b in (first, second)
        )
        rows = _hand_terms(trainer.model, first) + _hand_terms(trainer.model, second)
        assert total.item() == pytest.approx(_paper_loss(rows, 4, normalization), rel=1e-6)


def test_loss_function_on_synthetic_log_probs():
    log_probs = -torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0]])
    mask = log_probs != 0
    task = torch.tensor([CLASSIFICATION, REASONING, REASONING])
    # Two images: cls NLL 3, chains of 4 and 2 tokens with NLL 4 and 4.
    normalizer = torch.tensor([2.0, 2.0, 6.0])
    per_sequence = mtct_loss(log_probs, mask, task, normalizer, "per_sequence").loss
    assert per_sequence.item() == pytest.approx((3 + 4 / 4 + 4 / 2) / 2)
    per_token = mtct_loss(log_probs, mask, task, normalizer, "per_token").loss
    assert per_token.item() == pytest.approx((3 + 4 / 3 + 4 / 3) / 2)
    weighted = mtct_loss(log_probs, mask, task, normalizer, "per_sequence", cls_weight=2, reasoning_weight=0).loss
    assert weighted.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="per_sequence"):
        mtct_loss(log_probs, mask, task, normalizer, "per_batch")


def test_logged_loss_parts_by_name():
    log_probs = -torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0]])
    mask = log_probs != 0
    task = torch.tensor([CLASSIFICATION, REASONING, REASONING])
    result = mtct_loss(log_probs, mask, task, torch.tensor([2.0, 2.0, 6.0]))
    top1 = torch.tensor([[True, False, False, False], [True, True, True, False], [False, False, False, False]])
    sums = NamedSums()
    for _ in range(2):  # two logging steps' worth: sums add up, the metrics are unchanged
        sums.add(result.stats(top1, mask, entropy=torch.full((3, 4), 0.5)))
    metrics = loss_metrics(sums.totals())
    assert metrics == pytest.approx(
        {
            "cls_loss": 3.0,
            "reasoning_loss": (4 / 4 + 4 / 2) / 2,
            "cls_token_accuracy": 1 / 2,
            "reasoning_token_accuracy": 3 / 6,
            "mean_token_accuracy": 4 / 8,
            "entropy": 0.5,
        }
    )
    sums.reset()
    sums.add(mtct_loss(log_probs[1:], mask[1:], task[1:], torch.tensor([1.0, 2.0, 6.0])).stats())
    assert "cls_loss" not in loss_metrics(sums.totals()) and "cls_token_accuracy" not in loss_metrics(sums.totals())
    with pytest.raises(ValueError, match="same names"):
        sums.add({"cls_nll": torch.tensor(1.0)})
