"""Collated MTCT batches: loss only on answer tokens, never on prompt, image or padding tokens (every architecture)."""

import pytest
import torch

from mtct_support import BENCHMARK, IMAGE_TOKENS, config, load_tiny, template_parts, tiny_dataset
from rdmldg_hf.data.training_rows import CLASSIFICATION, REASONING
from rdmldg_hf.testing import ARCHITECTURES
from rdmldg_hf.trainers import MTCTTrainer


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_labels_cover_exactly_the_answers(tmp_path, architecture):
    model, processor = load_tiny(architecture)
    dataset = tiny_dataset(8)
    trainer = MTCTTrainer(model, args=config(tmp_path), train_dataset=dataset, processing_class=processor)
    units = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(units)
    tokenizer = processor.tokenizer
    image_tokens = set(getattr(processor, "image_token_ids", [processor.image_token_id]))
    image_token = tokenizer.convert_tokens_to_ids(processor.image_token)
    labels, input_ids = batch["labels"], batch["input_ids"]
    assert batch["mtct_num_units"].item() == 4
    assert batch["mtct_task"].tolist() == [
        CLASSIFICATION,
        REASONING,
        CLASSIFICATION,
        CLASSIFICATION,
        REASONING,
        CLASSIFICATION,
        REASONING,
    ]
    generation_prompt, _ = template_parts(processor, "x")
    for row in range(labels.shape[0]):
        kept = labels[row] != -100
        # Labels are the input ids where kept, and never an image, padding or prompt token.
        assert torch.equal(labels[row][kept], input_ids[row][kept])
        assert not any(int(t) in image_tokens for t in labels[row][kept])
        assert batch["attention_mask"][row][kept].all()
        image = dataset[int(batch["mtct_image_index"][row])]
        classification = batch["mtct_task"][row] == CLASSIFICATION
        answer = BENCHMARK.class_names[image["label"]] if classification else image["reasoning"]
        # The answer, its end-of-turn token and what the template writes after it (Qwen2-style: a newline).
        _, completion = template_parts(processor, answer)
        assert completion.startswith(answer + tokenizer.eos_token)
        assert tokenizer.decode(labels[row][kept]) == completion
        # The answer is one contiguous block right after the prompt's generation prompt.
        positions = kept.nonzero().flatten()
        assert (positions.diff() == 1).all()
        before = tokenizer.decode(input_ids[row][: positions[0]], skip_special_tokens=False)
        assert before.endswith(generation_prompt) and "Choose from the following options" in before
        # Every image placeholder and all padding sit outside the answer.
        assert (input_ids[row] == image_token).sum() == IMAGE_TOKENS[architecture]
        assert not batch["attention_mask"][row][positions[-1] + 1 :].any()
