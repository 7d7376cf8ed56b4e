"""Evaluation and sharing of rdmldg models.

* :mod:`.predict` -- the prediction modes ``direct`` (class log-likelihoods), ``direct-generate``
  and ``reasoning`` (invalid outputs predicted as -1, scored wrong, reported as a rate);
* :mod:`.icl` -- k-shot demos (``random``, ``balanced``, ``same_domain``, ``other_domain``), seeded;
* :mod:`.api` -- the zero-shot baseline of an OpenAI-compatible model through the teacher's client;
* :mod:`.rows` -- benchmark checks and scoring with the ``evaluate`` metric
  of :mod:`.dg_metric` (``metric/metric.py``, loadable offline with ``evaluate.load``);
* :mod:`.lodo_cell` -- one leave-one-domain-out cell (train a method, its run record), with its settings
  (:mod:`.lodo_config`) and tables (:mod:`.lodo_tables`: results.json's table, results.md); the runner over
  every cell is :mod:`rdmldg_hf.experiments.lodo`;
* :mod:`.stages` -- accuracy after each training stage, a run's results.json and its summary table;
* :mod:`.classifier` -- ``DGClassifier.from_pretrained(folder or repo id)``;
* :mod:`.sharing` -- ``push_adapter``: adapter, ``rdmldg_config.json``, results and a model card.

``rdmldg eval`` and ``rdmldg push`` live in :mod:`rdmldg_hf.commands`.
"""
