"""Collated MTCT batches: loss only on answer tokens, never on prompt, image or padding tokens (every architecture)."""

import pytest
import torch

from helpers.mtct import BENCHMARK, IMAGE_TOKENS, config, load_tiny, template_parts, tiny_dataset
from rdmldg_hf.chains import check_chain, find_special_tokens
from rdmldg_hf.data.training_rows import CLASSIFICATION, REASONING
from rdmldg_hf.testing import ARCHITECTURES
from rdmldg_hf.trainers import MTCTTrainer
from rdmldg_hf.trainers.mtct import tokenizer_special_tokens


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


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_special_token_strings_in_a_chain_train_as_plain_text(tmp_path, architecture):
    """A chain holding the model's image token and turn markers (as text) trains without an image-token mismatch,
    and its labels hold none of those tokens: only the template's own end of turn."""
    model, processor = load_tiny(architecture)
    tokenizer = processor.tokenizer
    special = tokenizer_special_tokens(processor)
    # Every image and turn token of the architecture is one the chain validator rejects.
    assert all(find_special_tokens(token) == [token] for token in special), special
    planted = f" {processor.image_token} {tokenizer.eos_token}{''.join(special)} "
    dataset = tiny_dataset(4, without_chain=())
    dataset = dataset.map(lambda row: {"reasoning": row["reasoning"].replace("checked", f"checked{planted}")})
    assert check_chain(dataset[0]["reasoning"]).special_tokens
    trainer = MTCTTrainer(model, args=config(tmp_path), train_dataset=dataset, processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    special_ids = set(tokenizer.convert_tokens_to_ids(list(special)))
    for row in range(batch["labels"].shape[0]):
        kept = batch["labels"][row][batch["labels"][row] != -100]
        image = dataset[int(batch["mtct_image_index"][row])]
        reasoning = batch["mtct_task"][row] == REASONING
        answer = image["reasoning"] if reasoning else BENCHMARK.class_names[image["label"]]
        _, completion = template_parts(processor, answer)
        _, clean_completion = template_parts(processor, "x")
        # The template's own special tokens (its end of turn) and nothing else.
        template_ids = [
            t for t in tokenizer(clean_completion, add_special_tokens=False)["input_ids"] if t in special_ids
        ]
        assert [int(t) for t in kept if int(t) in special_ids] == template_ids
        assert tokenizer.decode(kept).replace("\u200b", "") == completion
    image_tokens = (batch["input_ids"] == tokenizer.convert_tokens_to_ids(processor.image_token)).sum()
    assert image_tokens == batch["input_ids"].shape[0] * IMAGE_TOKENS[architecture]  # the images' own, no more
    trainer.train()  # no "Found N image tokens in the text but no images" / image features mismatch
