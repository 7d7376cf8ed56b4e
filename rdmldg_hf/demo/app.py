"""The Gradio app of a trained model: its direct class probabilities and its reasoning, streamed.

    demo = build_demo(DGClassifier.from_pretrained(folder), ModelFacts.from_folder(folder), examples)
    demo.launch()                       # or launch_demo(folder): loads the model, then serves it

The page takes an image (upload or example), shows every class's probability as the direct answer (the
scorer of ``rdmldg eval``, top 5 shown) and streams the five-stage chain as it is generated: SUMMARY,
CAPTION, REASONING, REFLECTION in collapsible sections, the CONCLUSION as the answer. Clients call two
endpoints: ``/classify`` (image -> {class: probability}, every class) and ``/reason`` (image -> the chain
and the class its conclusion names; intermediate results stream). Uploads are checked from their header
before a pixel is decoded; a bad one gets a message naming it and the server keeps serving. One request
runs at a time per model (Gradio's queue), so a second user waits instead of running out of memory.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

# Before Gradio is imported: no analytics, no version check, no Hub telemetry (nothing phones home).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
try:
    import gradio as gr
    from gradio.data_classes import FileData
except ImportError as error:
    raise ImportError(
        f'The demo needs Gradio, an optional dependency: pip install "rdmldg_hf[demo]" ({error}).'
    ) from error
import torch
from PIL import Image
from pydantic import ValidationError  # Gradio's data models are pydantic's

from ..data.pixel_limit import OversizedImageError
from ..evaluation.classifier import DGClassifier, resolve_folder
from ..evaluation.predict import decode_image
from .examples import Example, write_examples
from .facts import ModelFacts
from .rendering import SECTION_STAGES, conclusion_markdown, stage_sections
from .streaming import ReasoningUpdate, stream_reasoning

__all__ = ["UploadError", "read_upload", "build_demo", "launch_demo"]

logger = logging.getLogger(__name__)

# Every event that runs the model shares this queue slot.
CONCURRENCY_ID = "model"
TITLE = "RD-MLDG: a reasoning classifier"


class UploadError(ValueError):
    """An upload the demo cannot classify (none, not an image, over the pixel limit)."""


def read_upload(payload: Mapping[str, Any] | None) -> Image.Image:
    """The RGB image of a Gradio file upload, decoded only when its header says it is an image within the pixel
    limit.

    Only Gradio's file payloads are read (``meta`` naming ``gradio.FileData``): Gradio has checked that their
    file was uploaded to this server; a bare ``{"path": ...}`` could name any file on the server's disk.

    Raises:
        UploadError: no upload, not a Gradio upload, not an image, or over the pixel limit; the message names
            the file and the fix.
    """
    if not payload or not payload.get("path"):
        raise UploadError("No image was given: upload an image (PNG, JPEG, ...) or pick an example.")
    try:
        upload = FileData.model_validate(payload, context={"validate_meta": True})
    except ValidationError:
        raise UploadError(
            "The image is not a file uploaded to this server: send it with gradio_client.handle_file(path)."
        ) from None
    name = Path(upload.orig_name or upload.path).name
    try:
        return decode_image(upload.path)
    except ValueError as error:
        fix = "" if isinstance(error.__cause__, OversizedImageError) else " Upload an image file (PNG, JPEG, ...)."
        raise UploadError(f"Cannot classify {name!r}: {error}.{fix}") from error


def build_demo(classifier: DGClassifier, facts: ModelFacts, examples: Sequence[Example] = ()) -> gr.Blocks:
    """The Gradio Blocks app of a loaded classifier (its queue set: one request at a time)."""

    def direct(image: Any) -> dict[str, float]:
        return classifier.predict([image], mode="direct")[0].probabilities

    def as_gradio_error(error: UploadError) -> Exception:
        return gr.Error(str(error), print_exception=False)

    def classify(image: FileData | None) -> dict[str, float]:
        """Every class's probability as the direct answer (the scorer of `rdmldg eval`), in class order."""
        try:
            return direct(read_upload(image))
        except UploadError as error:
            raise as_gradio_error(error) from None

    def reason(image: FileData | None) -> Iterator[tuple[str, str | None]]:
        """The five-stage chain as it is generated, then the final chain and the class its conclusion names
        (None when it names no class)."""
        try:
            decoded = read_upload(image)
        except UploadError as error:
            raise as_gradio_error(error) from None
        for update in stream_reasoning(classifier, decoded):
            yield update.text, update.label

    def run(image: dict[str, Any] | None) -> Iterator[tuple[Any, ...]]:
        """The page's run: a message for a bad upload; else probabilities, then the chain as it streams."""
        try:
            decoded = read_upload(image)
        except UploadError as error:
            yield (None, f"**{error}**", *[""] * len(SECTION_STAGES), "", "")
            return
        yield (direct(decoded), "", *stage_sections(""), conclusion_markdown(ReasoningUpdate("")), "")
        for update in stream_reasoning(classifier, decoded):
            yield (gr.skip(), gr.skip(), *stage_sections(update.text), conclusion_markdown(update), update.text)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nUpload an image: the model answers directly, then reasons its way to a class.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Image", sources=["upload"], height=240, elem_id="demo-image")
                button = gr.Button("Run", variant="primary", elem_id="demo-run")
                status = gr.Markdown(elem_id="demo-status")
                if examples:
                    gr.Examples(
                        [[str(example.path)] for example in examples],
                        inputs=[image],
                        example_labels=[example.caption for example in examples],
                        label="Examples (domain: class)",
                    )
                gr.Markdown("### The model\n" + facts.markdown(), elem_id="demo-facts")
            with gr.Column(scale=2):
                label = gr.Label(num_top_classes=5, label="Direct answer: class probabilities", elem_id="demo-direct")
                gr.Markdown("### Reasoning")
                sections = []
                for stage in SECTION_STAGES:
                    with gr.Accordion(stage, open=True, elem_id=f"demo-{stage.lower()}-section"):
                        sections.append(gr.Markdown(elem_id=f"demo-{stage.lower()}"))
                gr.Markdown("### Conclusion")
                conclusion = gr.Markdown(elem_id="demo-conclusion")
                with gr.Accordion("Generated text", open=False):
                    raw = gr.Textbox(show_label=False, lines=6, elem_id="demo-raw")
        button.click(
            run,
            inputs=[image],
            outputs=[label, status, *sections, conclusion, raw],
            preprocess=False,  # the upload is read by read_upload (header first), never decoded by Gradio
            api_visibility="private",
            concurrency_id=CONCURRENCY_ID,
            concurrency_limit=1,
        )
        gr.api(classify, api_name="classify", concurrency_id=CONCURRENCY_ID, concurrency_limit=1)
        gr.api(reason, api_name="reason", concurrency_id=CONCURRENCY_ID, concurrency_limit=1)
    return demo.queue(default_concurrency_limit=1)


def launch_demo(
    model: str,
    *,
    host: str | None = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    use_kernels: bool = False,
    base_model: str | None = None,
    examples_dir: str | os.PathLike | None = None,
    prevent_thread_lock: bool = False,
) -> gr.Blocks:
    """Load ``model`` (an rdmldg output folder or Hub repo id) and serve its demo; returns the Blocks.

    ``host``/``port`` None take Gradio's defaults (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, as on a
    Space); ``device``, ``dtype`` and ``use_kernels`` place the model as ``DGClassifier.from_pretrained`` does
    (default: the GPU when there is one, in bf16 where supported); example images go to ``examples_dir``
    (default: a temporary folder).
    """
    folder = resolve_folder(model)
    placement = {"device": device or "auto", "dtype": dtype, "use_kernels": use_kernels}
    classifier = DGClassifier.from_pretrained(folder, base_model, **placement)
    facts = ModelFacts.from_folder(folder, model)
    examples = write_examples(facts, examples_dir or tempfile.mkdtemp(prefix="rdmldg-demo-examples-"))
    demo = build_demo(classifier, facts, examples)
    logger.info("Serving the demo of %s (%d example images).", model, len(examples))
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        show_error=True,  # an unexpected error's message in the page, not only in the server's log
        ssr_mode=False,
    )
    return demo
