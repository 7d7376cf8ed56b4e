"""Label-blind chain generation through an OpenAI-compatible API, rejection sampling, and the
resumable store of replies: how DomainBed-Reasoning (RD-MLDG, arXiv 2602.23777) is made.

``rdmldg build --teacher gpt-4o`` drives it through its option group, :mod:`rdmldg_hf.teacher.arguments`;
:func:`rdmldg_hf.teacher.pipeline.generate_chains` is the library entry point.
"""
