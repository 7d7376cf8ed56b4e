"""Every question and chat message the project sends to a model or trains on.

No prompt text lives anywhere else. ``PROMPT_VERSION`` is stored with every chain,
adapter and result so that outputs made with different wording are never mixed.

Messages use the conversational format of TRL and transformers chat templates: a user
turn whose content is ``[{"type": "image"}, {"type": "text", "text": question}]`` and
an assistant turn whose content is ``[{"type": "text", "text": answer}]``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from .chains import STAGES

__all__ = [
    "PROMPT_VERSION",
    "TASKS",
    "Task",
    "classification_question",
    "reasoning_question",
    "question",
    "user_message",
    "assistant_message",
    "prompt_messages",
    "training_example",
    "api_messages",
    "icl_messages",
]

PROMPT_VERSION = "rdmldg-prompts-v1"

Task = Literal["classification", "reasoning"]
TASKS: tuple[str, ...] = ("classification", "reasoning")

# From Zhang et al. 2024 (arXiv 2402.06599), reused by RD-MLDG.
_CLASSIFICATION = "What type of object is in this photo? Choose from the following options: {options}."

_STAGE_HINTS = {
    "SUMMARY": "your plan",
    "CAPTION": "what in the image matters",
    "REASONING": "your step-by-step argument",
    "REFLECTION": "a check of that argument",
    "CONCLUSION": "the option's name only",
}
_REASONING_INSTRUCTION = (
    "Answer in five stages, each inside its tags: "
    + ", ".join(f"<{stage}> {_STAGE_HINTS[stage]} </{stage}>" for stage in STAGES)
    + "."
)


def _options(class_names: Sequence[str]) -> str:
    if not class_names:
        raise ValueError("A question needs at least one class name; got an empty class list.")
    return ", ".join(class_names)


def classification_question(class_names: Sequence[str]) -> str:
    """The direct classification question with the class options (Zhang et al., arXiv 2402.06599)."""
    return _CLASSIFICATION.format(options=_options(class_names))


def reasoning_question(class_names: Sequence[str]) -> str:
    """The classification question plus the instruction to answer in the five tagged stages."""
    return f"{classification_question(class_names)} {_REASONING_INSTRUCTION}"


def question(task: Task, class_names: Sequence[str]) -> str:
    """The question of a task: ``"classification"`` or ``"reasoning"``."""
    if task == "classification":
        return classification_question(class_names)
    if task == "reasoning":
        return reasoning_question(class_names)
    raise ValueError(f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)}.")


def user_message(text: str, num_images: int = 1) -> dict[str, Any]:
    """A user turn with ``num_images`` image placeholders followed by the text."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_message(text: str) -> dict[str, Any]:
    """An assistant turn holding ``text``."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def prompt_messages(task: Task, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The chat messages that ask one image's question (for generation and scoring)."""
    return [user_message(question(task, class_names))]


def training_example(task: Task, class_names: Sequence[str], answer: str) -> dict[str, list[dict[str, Any]]]:
    """A TRL prompt-completion example: ``{"prompt": [user turn], "completion": [assistant turn]}``.

    ``answer`` is the class name (classification) or the rendered chain (reasoning).
    """
    if not answer or not answer.strip():
        raise ValueError(f"A {task} training example needs a non-empty answer; got {answer!r}.")
    return {"prompt": prompt_messages(task, class_names), "completion": [assistant_message(answer)]}


def api_messages(
    task: Task, class_names: Sequence[str], image_urls: Sequence[str], detail: str | None = None
) -> list[dict[str, Any]]:
    """The same question in the OpenAI chat-completions format: image URL parts, then the text.

    ``image_urls`` are usually base64 data URLs; ``detail`` ("low", "high", "auto") is sent
    only when given. The text part is exactly :func:`question`, so requests for a benchmark
    differ only by their images.
    """
    content: list[dict[str, Any]] = []
    for url in image_urls:
        image_url: dict[str, Any] = {"url": url}
        if detail is not None:
            image_url["detail"] = detail
        content.append({"type": "image_url", "image_url": image_url})
    content.append({"type": "text", "text": question(task, class_names)})
    return [{"role": "user", "content": content}]


def icl_messages(task: Task, class_names: Sequence[str], demo_answers: Sequence[str]) -> list[dict[str, Any]]:
    """A k-shot (in-context) prompt: one solved turn per demo, then the question of the test image.

    Each demo is a user turn with its image and the task's question followed by an assistant
    turn holding ``demo_answers[i]`` (a class name, or a chain for ``"reasoning"``); the
    images are passed in the same order, the test image last. With no demos this is
    :func:`prompt_messages`.
    """
    text = question(task, class_names)
    messages: list[dict[str, Any]] = []
    for answer in demo_answers:
        if not answer or not str(answer).strip():
            raise ValueError(f"An in-context demo needs a non-empty answer; got {answer!r}.")
        messages += [user_message(text), assistant_message(answer)]
    return messages + [user_message(text)]
