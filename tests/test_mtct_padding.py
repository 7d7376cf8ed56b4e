"""Less padding in MTCT batches, the same loss: task sub-batches and length-grouped sampling."""

from dataclasses import replace

import pytest
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from helpers.devices import FP32_REORDERED, model_inputs, on_model_device
from helpers.mtct import config, load_tiny, tiny_dataset
from rdmldg_hf.data.training_rows import CLASSIFICATION, REASONING, TASKS_COLUMN, unit_lengths
from rdmldg_hf.testing import ARCHITECTURES
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer
from rdmldg_hf.trainers.mtct import batch_groups

B = 4  # images per batch; image 1 has no chain


def _trainer(tmp_path, architecture="llava", dataset=None, **overrides):
    model, processor = load_tiny(architecture)
    with torch.no_grad():  # sharpen the random model so that token NLLs differ from row to row
        model.get_output_embeddings().weight.mul_(40.0)
    args = config(tmp_path, per_device_train_batch_size=B, **overrides)
    return MTCTTrainer(model, args=args, train_dataset=dataset or tiny_dataset(), processing_class=processor)


def _row_nll(model, batch) -> dict[tuple[int, int], tuple[float, int]]:
    """(image, task) -> (summed NLL of the answer tokens, answer tokens), from the logits of each sub-batch."""
    rows = {}
    for group in batch_groups(batch):
        with torch.no_grad():
            logp = torch.log_softmax(model(**model_inputs(group, model)).logits[:, :-1].double(), dim=-1).cpu()
        labels = group["labels"][:, 1:]
        kept = labels != -100
        token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        for r in range(labels.shape[0]):
            key = (int(group["mtct_image_index"][r]), int(group["mtct_task"][r]))
            rows[key] = (-float(token_logp[r][kept[r]].sum()), int(kept[r].sum()))
    return rows


def _tokens(batch) -> tuple[int, int]:
    """(real tokens, computed tokens: real plus padding) over the sub-batches."""
    groups = batch_groups(batch)
    return sum(int(g["attention_mask"].sum()) for g in groups), sum(g["input_ids"].numel() for g in groups)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_task_groups_keep_every_rows_loss_with_less_padding(tmp_path, architecture):
    trainer = _trainer(tmp_path, architecture)
    trainer.model.eval()  # no dropout: the two forwards must see the same model
    units = [trainer.train_dataset[i] for i in range(B)]
    whole = trainer.data_collator(units)
    grouped = replace(trainer.data_collator, group_by_task=True)(units)
    assert "mtct_groups" not in whole and len(grouped["mtct_groups"]) == 2
    assert [g["mtct_task"].unique().tolist() for g in grouped["mtct_groups"]] == [[CLASSIFICATION], [REASONING]]
    # Every (image, task) row is there once, with the same answer tokens and the same NLL.
    expected, got = _row_nll(trainer.model, whole), _row_nll(trainer.model, grouped)
    assert sorted(got) == sorted(expected) and len(got) == 2 * B - 1
    for key, (nll, count) in expected.items():
        assert got[key][1] == count and count > 0
        assert got[key][0] == pytest.approx(nll, rel=1e-5, abs=1e-6), key
    real, computed = _tokens(grouped)
    assert real == _tokens(whole)[0] and computed < _tokens(whole)[1]


def test_task_groups_give_the_same_loss_and_gradients(tmp_path):
    trainer = _trainer(tmp_path, reasoning_normalization="per_sequence")
    model = trainer.model
    units = [trainer.train_dataset[i] for i in range(B)]
    results = []
    for collate in (trainer.data_collator, replace(trainer.data_collator, group_by_task=True)):
        batch = on_model_device(collate(units), model)
        normalizer = trainer._get_num_items_in_batch([batch], trainer.args.device)
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, batch, num_items_in_batch=normalizer)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((normalizer, loss.item(), grads))
    (norm_a, loss_a, grads_a), (norm_b, loss_b, grads_b) = results
    assert torch.equal(norm_a, norm_b) and norm_a[0].item() == B
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, **FP32_REORDERED, msg=name)


def test_training_runs_one_forward_per_task_group(tmp_path):
    trainer = _trainer(tmp_path, max_steps=2)
    lengths = []
    hook = trainer.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: lengths.append(tuple(args[0].shape))
    )
    try:
        trainer.train()
    finally:
        hook.remove()
    assert len(lengths) == 4  # two steps, two sub-batches each
    cls_rows, reasoning_rows = lengths[0], lengths[1]
    assert cls_rows[0] == B and reasoning_rows[0] == B - 1 and cls_rows[1] < reasoning_rows[1]
    assert [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # Evaluation batches stay whole (compute_metrics gets logits for every row of the batch).
    assert "mtct_groups" not in trainer.data_collator([trainer.train_dataset[0]])
    grouped = replace(trainer.data_collator, group_by_task=True)([trainer.train_dataset[i] for i in range(B)])
    with pytest.raises(ValueError, match="group_by_task=False"):
        trainer.compute_loss(trainer.model, grouped, return_outputs=True)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("paired", "group_by_length"),
        ("reasoning_only", "group_by_length"),
        ("mixed", "random"),
        ("cls_only", "random"),
    ],
)
def test_default_sampler_follows_the_mode(tmp_path, mode, expected):
    assert MTCTConfig(output_dir=str(tmp_path), mode=mode).train_sampling_strategy == expected
    chosen = MTCTConfig(output_dir=str(tmp_path), mode=mode, train_sampling_strategy="sequential")
    assert chosen.train_sampling_strategy == "sequential"


def test_unit_lengths_count_answer_tokens(tmp_path):
    trainer = _trainer(tmp_path, mode="paired")
    tokenizer = trainer.processing_class.tokenizer
    units = trainer.train_dataset
    names = trainer.mtct_data.class_names
    lengths = unit_lengths(units, tokenizer, names)
    for i in (0, 1, 2):
        unit = units[i]
        name = len(tokenizer(names[unit["label"]], add_special_tokens=False)["input_ids"])
        chain = len(tokenizer(unit["reasoning"], add_special_tokens=False)["input_ids"]) if i != 1 else 0
        assert unit[TASKS_COLUMN] == ([CLASSIFICATION] if i == 1 else [CLASSIFICATION, REASONING])
        assert lengths[i] == name + chain


def _chain_spread(trainer) -> int:
    """Summed over an epoch's batches: longest minus shortest reasoning row (answer tokens), i.e. padding."""
    spread = 0
    for batch in trainer.get_train_dataloader():
        reasoning = [g for g in batch_groups(batch) if g["mtct_task"][0] == REASONING]
        if reasoning:
            answers = (reasoning[0]["labels"] != -100).sum(-1)
            spread += int(answers.max() - answers.min())
    return spread


def test_length_grouped_sampling_is_seeded_and_cuts_padding(tmp_path):
    dataset = tiny_dataset(64, without_chain=())
    grouped = _trainer(tmp_path, dataset=dataset, train_sampling_strategy=None)  # the paired default
    assert grouped.args.train_sampling_strategy == "group_by_length"
    assert grouped.args.length_column_name in grouped.train_dataset.column_names
    samplers = []
    for global_seed in (1, 2):  # the draw depends on the run's seed only, as every process needs
        torch.manual_seed(global_seed)
        samplers.append(grouped._get_train_sampler())
        assert isinstance(samplers[-1], LengthGroupedSampler)
    assert list(samplers[0]) == list(samplers[1]) and sorted(samplers[0]) == list(range(64))
    shuffled = _trainer(tmp_path, dataset=dataset, train_sampling_strategy="random")
    assert shuffled.args.length_column_name not in shuffled.train_dataset.column_names
    assert _chain_spread(grouped) < _chain_spread(shuffled) / 2
