"""Collated MTCT batches: loss only on answer tokens, never on prompt, image or padding tokens."""

import pytest
import torch

from mtct_support import BENCHMARK, config, load_tiny, tiny_dataset
from rdmldg_hf.data.training_rows import CLASSIFICATION, REASONING
from rdmldg_hf.trainers import MTCTTrainer


@pytest.mark.parametrize("architecture", ["llava", "qwen2_vl"])
def test_labels_cover_exactly_the_answers(tmp_path, architecture):
    model, processor = load_tiny(architecture)
    dataset = tiny_dataset(8)
    trainer = MTCTTrainer(model, args=config(tmp_path), train_dataset=dataset, processing_class=processor)
    units = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(units)
    tokenizer = processor.tokenizer
    image_token = tokenizer.convert_tokens_to_ids(processor.image_token)
    labels, input_ids = batch["labels"], batch["input_ids"]
    assert batch["mtct_num_units"].item() == 4
    assert batch["mtct_task"].tolist() == [CLASSIFICATION, REASONING, CLASSIFICATION, CLASSIFICATION, REASONING, CLASSIFICATION, REASONING]
    for row in range(labels.shape[0]):
        kept = labels[row] != -100
        # Labels are the input ids where kept, and never an image, padding or prompt token.
        assert torch.equal(labels[row][kept], input_ids[row][kept])
        assert not (labels[row] == image_token).any()
        assert batch["attention_mask"][row][kept].all()
        image = dataset[int(batch["mtct_image_index"][row])]
        answer = BENCHMARK.class_names[image["label"]] if batch["mtct_task"][row] == CLASSIFICATION else image["reasoning"]
        assert tokenizer.decode(labels[row][kept]) == answer + tokenizer.eos_token
        # The answer is one contiguous block right after the prompt's "<|assistant|>\n".
        positions = kept.nonzero().flatten()
        assert (positions.diff() == 1).all()
        before = tokenizer.decode(input_ids[row][: positions[0]])
        assert before.endswith("<|assistant|>\n") and "<|user|>" in before
        # Every image placeholder and all padding sit outside the answer.
        assert (input_ids[row] == image_token).sum() == 16
        assert not batch["attention_mask"][row][positions[-1] + 1 :].any()
