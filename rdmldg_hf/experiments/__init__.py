"""Experiments as DomainBed runs them: sweeps, per-checkpoint records, selection after the fact, results tables.

* :mod:`.records` -- ``results.jsonl`` in DomainBed's format (every environment's in and out accuracy at each
  checkpoint), ``done``, and the callback that writes them during MTCT, SARR, LODO and sweep runs;
* :mod:`.selection` -- DomainBed's three model-selection methods on records;
* :mod:`.collect` -- ``rdmldg collect``: records to tables of mean +- standard error over trial seeds;
* :mod:`.hparams` -- the hyperparameter distributions a sweep draws from;
* :mod:`.sweep` -- ``rdmldg sweep``: the runs of a sweep, their folders and states;
* :mod:`.launchers` -- local, parallel and submitit launchers; :mod:`.sweep_run` -- one run;
* :mod:`.lodo` -- the ablation runner of ``recipes/lodo.py`` (every method x held-out domain, one cell at a time
  through :mod:`rdmldg_hf.evaluation.lodo_cell`, selection during training, paper-shaped tables).
"""
