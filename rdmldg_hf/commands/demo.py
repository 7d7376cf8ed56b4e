"""``rdmldg demo``: serve a trained model as a Gradio app, or write the Hugging Face Space that serves it.

    rdmldg demo outputs/sarr-tiny                                   # http://127.0.0.1:7860
    rdmldg demo someone/rdmldg-officehome-art --port 8080 --device cuda:1
    rdmldg demo someone/rdmldg-officehome-art --space-dir space/    # the Space's files (no server, no upload)
    python space/app.py                                             # serves that folder

The page shows every class's probability as the direct answer and streams the reasoning chain; clients call
``/classify`` and ``/reason`` (``gradio_client``). Needs the ``demo`` extra: ``pip install "rdmldg_hf[demo]"``.
"""

from __future__ import annotations

import argparse

from . import CommandError, add_device_arguments, device_kwargs

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="An rdmldg output folder (adapter or full model) or Hub repo id."
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, help="Port to serve on (default: GRADIO_SERVER_PORT, else 7860).")
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (off by default).")
    add_device_arguments(parser)
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="Uploads with more pixels are refused from their header (default: PIL's 89,478,485).",
    )
    parser.add_argument(
        "--space-dir", metavar="DIR", help="Write the Space folder of MODEL into DIR instead of serving it."
    )


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    try:
        from ..demo.app import launch_demo
    except ImportError as error:
        raise CommandError(f"{error} `rdmldg demo` serves a Gradio app.") from None
    from ..demo.space import write_space

    if args.max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = args.max_pixels  # the header check and PIL's own limit follow it
    if args.space_dir:
        folder = write_space(args.space_dir, args.model)
        print(f"Wrote the Space of {args.model} to {folder}: serve it with `python {folder / 'app.py'}`.")
        return 0
    launch_demo(args.model, host=args.host, port=args.port, share=args.share, **device_kwargs(args))
    return 0
