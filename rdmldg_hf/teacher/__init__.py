"""Label-blind chain generation through an OpenAI-compatible API, rejection sampling, and the
resumable store of replies (METHOD.md section 2).

``rdmldg build --teacher gpt-4o`` drives it through :mod:`rdmldg_hf.teacher.cli`;
:func:`rdmldg_hf.teacher.pipeline.generate_chains` is the library entry point.
"""
