"""Direct class scoring: every class name's likelihood as the answer to the classification question.

:func:`score_classes` runs each prompt (image(s) + question) once, keeping its KV cache, and reads
the first answer token of every class from that prefill's last position. Class names of several
tokens are then scored from the cache in one more forward pass per batch: their tokens form a
trie (:class:`AnswerTree`), fed after the prompt with an attention mask that lets each token see
the prompt and its own ancestors only, so a shared prefix such as "alarm" of "alarm clock" is fed
once. The language-model head is applied only at answer positions, a few at a time (one per image
with a large vocabulary), so no ``[batch, sequence, vocab]`` logits are ever materialised.
Probabilities equal those of scoring every (image, class) continuation as its own sequence.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from .data.training_rows import render_rows
from .generation import ModelBackend, eval_mode, run_batches
from .prompts import prompt_messages, training_example

__all__ = ["answer_token_ids", "AnswerTree", "score_classes", "class_logprobs"]


def answer_token_ids(processor: Any, class_names: Sequence[str]) -> list[list[int]]:
    """Token ids of each class name as the assistant's answer: the tokens its classification training row trains.

    The rows are rendered as training renders them (:func:`rdmldg_hf.data.training_rows.render_rows`), so the
    scored tokens equal the trained ones by construction, whatever the chat template writes around an answer
    (``ASSISTANT: dog </s>``). The completion's tokens from its first special token on (the end of the turn,
    the same for every class) are left out.

    Raises:
        ValueError: when the training rows' prompt is not the generation prompt that scoring feeds the model,
            or a class's completion has no token before the end of the turn.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    prompt = processor.apply_chat_template(
        prompt_messages("classification", class_names), add_generation_prompt=True, tokenize=False
    )
    rows = render_rows(processor, [training_example("classification", class_names, name) for name in class_names])
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    answers = []
    for name, row in zip(class_names, rows):
        if row.prompt != prompt:
            raise ValueError(
                f"The chat template does not write the answer {name!r} after its generation prompt: the training "
                f"prompt ends {row.prompt[-40:]!r}, the generation prompt {prompt[-40:]!r}. Direct scoring feeds "
                "the generation prompt; use a chat template whose generation prompt starts the assistant turn, or "
                "mode 'direct-generate'."
            )
        ids = list(itertools.takewhile(lambda token: token not in special, row.completion_ids))
        if not ids:
            raise ValueError(
                f"The class name {name!r} has no token before the end of the turn in its training completion "
                f"{row.completion!r}; check the chat template."
            )
        answers.append(ids)
    return answers


@dataclass(frozen=True)
class AnswerTree:
    """The answers' tokens as a trie: what is fed after the prompt, and which log-probs sum to each class.

    Attributes:
        first_tokens: ``[num_classes]`` each answer's first token (read at the prompt's last position).
        node_tokens: ``[num_nodes]`` the tokens fed after the prompt: every answer prefix that some
            longer answer continues, once (its last token).
        node_depths: ``[num_nodes]`` position of each node after the prompt (0: right after it).
        visible: ``[num_nodes, num_nodes]`` whether a node attends to another (its ancestors and itself).
        pair_nodes, pair_tokens: ``[num_pairs]`` (node, next token) pairs whose log-probs are needed,
            sorted by node; ``pair_starts[n]:pair_starts[n + 1]`` are the pairs of node ``n``.
        membership: ``[num_classes, num_pairs]`` 1 where a pair belongs to a class's answer.
    """

    first_tokens: torch.Tensor
    node_tokens: torch.Tensor
    node_depths: torch.Tensor
    visible: torch.Tensor
    pair_nodes: torch.Tensor
    pair_tokens: torch.Tensor
    pair_starts: list[int]
    membership: torch.Tensor

    @classmethod
    def from_answers(cls, answers: Sequence[Sequence[int]]) -> "AnswerTree":
        """The trie of answer token ids (e.g. :func:`answer_token_ids`)."""
        if any(len(ids) == 0 for ids in answers):
            raise ValueError("Every answer needs at least one token.")
        nodes: dict[tuple[int, ...], int] = {}
        pairs: dict[tuple[int, int], int] = {}
        class_pairs: list[list[int]] = []
        for ids in answers:
            path = []
            for depth in range(1, len(ids)):
                node = nodes.setdefault(tuple(ids[:depth]), len(nodes))
                path.append(pairs.setdefault((node, ids[depth]), len(pairs)))
            class_pairs.append(path)
        prefixes = list(nodes)
        visible = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
        for prefix, node in nodes.items():
            visible[node, [nodes[prefix[:depth]] for depth in range(1, len(prefix) + 1)]] = True
        order = sorted(pairs, key=lambda pair: (pair[0], pairs[pair]))
        new_index = {pairs[pair]: i for i, pair in enumerate(order)}
        membership = torch.zeros(len(answers), len(order))
        for c, path in enumerate(class_pairs):
            membership[c, [new_index[p] for p in path]] = 1.0
        pair_nodes = torch.tensor([node for node, _ in order], dtype=torch.long)
        return cls(
            first_tokens=torch.tensor([ids[0] for ids in answers], dtype=torch.long),
            node_tokens=torch.tensor([prefix[-1] for prefix in prefixes], dtype=torch.long),
            node_depths=torch.tensor([len(prefix) - 1 for prefix in prefixes], dtype=torch.long),
            visible=visible,
            pair_nodes=pair_nodes,
            pair_tokens=torch.tensor([token for _, token in order], dtype=torch.long),
            pair_starts=torch.searchsorted(pair_nodes, torch.arange(len(nodes) + 1)).tolist(),
            membership=membership,
        )

    @property
    def num_nodes(self) -> int:
        return len(self.node_tokens)


def score_classes(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    class_names: Sequence[str],
    batch_size: int = 16,
    messages: Sequence[list[dict[str, Any]]] | None = None,
) -> torch.Tensor:
    """Probabilities ``[num_images, num_classes]`` of each class name as the direct answer.

    Each class's log-likelihood is the sum over its answer tokens right after the prompt; the
    probabilities are their softmax over the classes. Uses the classification question of
    :mod:`rdmldg_hf.prompts`. Under accelerate with N processes the batches are spread over
    processes and every process gets all rows. ``messages`` optionally gives each image its own
    prompt ending with the classification question (e.g. in-context demos,
    :func:`rdmldg_hf.prompts.icl_messages`); then ``images[i]`` is the list of that prompt's images.

    Raises:
        ValueError: no class names, a prompt count that differs from the image count, a chat
            template that does not end the prompt on a token boundary, or a model whose attention
            implementation cannot take the answers' attention mask.
    """
    if not class_names:
        raise ValueError("score_classes needs at least one class name.")
    if messages is not None and len(messages) != len(images):
        raise ValueError(f"{len(messages)} prompts but {len(images)} images; pass one prompt per image.")
    backend = ModelBackend(model, processor)
    tree = AnswerTree.from_answers(answer_token_ids(processor, class_names))
    question_messages = prompt_messages("classification", class_names)
    if tree.num_nodes:  # fail before any forward pass when the attention cannot take the answers' mask
        answer_attention_mask(model, torch.ones(1, 1, dtype=torch.long), tree, torch.float32)

    def one_batch(indices: list[int], batch_index: int) -> list[list[float]]:
        batch_messages = [question_messages] * len(indices) if messages is None else [messages[i] for i in indices]
        inputs = backend.encode(batch_messages, [images[i] for i in indices])
        with eval_mode(model), torch.inference_mode():
            logprobs = class_logprobs(model, inputs, tree)
        return torch.softmax(logprobs, dim=-1).tolist()

    rows = run_batches(one_batch, len(images), batch_size)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(images), len(class_names))


def class_logprobs(model: torch.nn.Module, inputs: Any, tree: AnswerTree) -> torch.Tensor:
    """Summed answer log-likelihoods ``[batch, num_classes]`` of a processor batch of (left-padded) prompts.

    One prefill with the KV cache (logits at the last position only), then, when some answer
    has several tokens, one pass over the answer trie from that cache.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (language-model head) to score answers.")
    with _head_calls(head, compute_logits=True) as calls:
        output = model(**inputs, use_cache=tree.num_nodes > 0, logits_to_keep=1)
    _check_logits_are_the_heads(model, calls, output.logits)
    last_logits = output.logits[:, -1].float()
    device = last_logits.device
    logprobs = torch.log_softmax(last_logits, dim=-1)[:, tree.first_tokens.to(device)]
    if tree.num_nodes == 0:
        return logprobs
    hidden = _answer_hidden_states(model, head, output.cache, inputs["attention_mask"], tree)
    # The head's logits per call are at most one layer's hidden states of the prompts (held by the prefill
    # anyway), and one position per image when the vocabulary is larger.
    nodes_per_call = max(1, inputs["attention_mask"].shape[1] * hidden.shape[-1] // head.weight.shape[0])
    pair_logprobs = _pair_logprobs(head, hidden, tree, nodes_per_call)
    return logprobs + pair_logprobs @ tree.membership.to(device).T


@dataclass
class _HeadCalls:
    """What a model fed its head (``inputs``) and what the head returned (``outputs``), call by call."""

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]


@contextlib.contextmanager
def _head_calls(head: torch.nn.Module, compute_logits: bool) -> Iterator[_HeadCalls]:
    """Record what the model feeds its head and what it gets back; with ``compute_logits=False`` the head gets
    no positions."""
    calls = _HeadCalls([], [])

    def record_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        calls.inputs.append(args[0])
        return None if compute_logits else (args[0][..., :0, :], *args[1:])

    def record_output(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        calls.outputs.append(output)

    handles = [head.register_forward_pre_hook(record_input), head.register_forward_hook(record_output)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _check_logits_are_the_heads(model: torch.nn.Module, calls: _HeadCalls, logits: torch.Tensor) -> None:
    """Refuse a model whose logits are not its head's output as is (soft-capping, a logit scale, ...).

    Scoring applies the head itself at answer positions, so the model must return what its head computed. The
    head's output in the forward pass is compared with the logits the model returned, so the check holds in any
    precision the model computes in (bf16 weights, or fp32 weights under autocast, whose logits accelerate casts
    to fp32): only a change of dtype is allowed between the two.
    """
    name = type(model).__name__
    if not calls.outputs:
        raise ValueError(
            f"{name} computed its logits without calling its output embeddings (get_output_embeddings()); "
            "direct scoring applies that head itself at answer positions and cannot score this model."
        )
    head_logits = calls.outputs[-1][:, -1:]
    if head_logits.shape != logits[:, -1:].shape or not torch.equal(head_logits.to(logits.dtype), logits[:, -1:]):
        raise ValueError(
            f"{name} transforms its head's logits (e.g. soft-capping or a logit scale): the logits it returns "
            "differ from its head's output. Direct scoring applies the head itself at answer positions and would "
            "give wrong numbers for this model; use mode 'direct-generate' instead."
        )


def _answer_hidden_states(
    model: torch.nn.Module, head: torch.nn.Module, cache: Any, prompt_mask: torch.Tensor, tree: AnswerTree
) -> torch.Tensor:
    """Final hidden states ``[batch, num_nodes, hidden]`` of the trie's nodes fed after the cached prompts."""
    device = prompt_mask.device
    positions = _next_positions(model, prompt_mask)[:, None] + tree.node_depths.to(device)[None, :]
    with _head_calls(head, compute_logits=False) as calls:
        model(
            input_ids=tree.node_tokens.to(device).expand(len(prompt_mask), -1),
            attention_mask=answer_attention_mask(model, prompt_mask, tree, head.weight.dtype),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
    if cache.get_seq_length() != prompt_mask.shape[1] + tree.num_nodes:
        raise RuntimeError(
            f"{type(model).__name__} did not continue from the prompts' KV cache (its cache holds "
            f"{cache.get_seq_length()} positions, not {prompt_mask.shape[1]} + {tree.num_nodes}); "
            "this needs transformers 5.24 or later, whose models take `cache=`."
        )
    return calls.inputs[-1]


def answer_attention_mask(model: Any, prompt_mask: torch.Tensor, tree: AnswerTree, dtype: torch.dtype) -> Any:
    """The attention mask of the trie's nodes after the prompts, in the form the model's attention takes.

    Each node sees the real (unpadded) prompt tokens, its ancestors and itself.

    Raises:
        ValueError: when the model's attention implementation takes no custom mask (flash attention).
    """
    batch, prompt_length = prompt_mask.shape
    visible = tree.visible.to(prompt_mask.device)

    def sees(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        answer_kv = (kv_idx - prompt_length).clamp(min=0)
        return (kv_idx < prompt_length) | visible[q_idx - prompt_length, answer_kv]

    implementation = model.config.get_text_config()._attn_implementation
    kv_mask = torch.cat([prompt_mask.bool(), prompt_mask.new_ones(batch, tree.num_nodes, dtype=torch.bool)], dim=1)
    mask = ALL_MASK_ATTENTION_FUNCTIONS[implementation](
        batch_size=batch,
        q_length=tree.num_nodes,
        kv_length=prompt_length + tree.num_nodes,
        q_offset=prompt_length,
        kv_offset=0,
        mask_function=sees,
        attention_mask=kv_mask,
        allow_is_causal_skip=False,
        dtype=dtype,
        device=prompt_mask.device,
    )
    if mask is None or len(mask.shape) != 4:
        raise ValueError(
            f"attn_implementation={implementation!r} takes no custom attention mask, which scoring class names of "
            "several tokens from one prefill needs; load the model with attn_implementation='sdpa' (or 'eager')."
        )
    return mask


def _next_positions(model: torch.nn.Module, prompt_mask: torch.Tensor) -> torch.Tensor:
    """``[batch]`` the position id of the token right after each prompt, as the model numbered the prefill.

    Multimodal-rope models (Qwen2-VL, Qwen2.5-VL) number only real tokens and keep per-row offsets
    (``rope_deltas``) from the prefill; the others number every slot, padding included.
    """
    deltas = next((m.rope_deltas for m in model.modules() if getattr(m, "rope_deltas", None) is not None), None)
    if deltas is None:
        return torch.full((prompt_mask.shape[0],), prompt_mask.shape[1], device=prompt_mask.device)
    return prompt_mask.long().sum(dim=-1) + deltas.reshape(-1).to(prompt_mask.device)


def _pair_logprobs(head: torch.nn.Module, hidden: torch.Tensor, tree: AnswerTree, nodes_per_call: int) -> torch.Tensor:
    """``[batch, num_pairs]`` log-probs of each (node, next token) pair, the head applied to a few nodes at a time."""
    out = torch.empty(hidden.shape[0], len(tree.pair_tokens), device=hidden.device)
    pair_tokens = tree.pair_tokens.to(hidden.device)
    pair_nodes = tree.pair_nodes.to(hidden.device)
    for first in range(0, tree.num_nodes, nodes_per_call):
        last = min(first + nodes_per_call, tree.num_nodes)
        start, stop = tree.pair_starts[first], tree.pair_starts[last]
        logits = head(hidden[:, first:last]).float()
        nodes = pair_nodes[start:stop] - first
        lse = torch.logsumexp(logits, dim=-1)
        out[:, start:stop] = logits[:, nodes, pair_tokens[start:stop]] - lse[:, nodes]
    return out
