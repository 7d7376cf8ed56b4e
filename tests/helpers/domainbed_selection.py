"""DomainBed's model selection and error formula written out from its definitions (domainbed/model_selection.py,
domainbed/scripts/collect_results.py), independently of rdmldg_hf's code, for checking `rdmldg collect`."""

from __future__ import annotations

NAMES = {
    "iid": "training-domain validation set",
    "loo": "leave-one-domain-out cross-validation",
    "oracle": "test-domain validation set (oracle)",
}


def _runs(records, trial, algorithm, envs):
    """hparams_seed -> that run's records (step order) of the run holding out exactly ``envs``."""
    out = {}
    for r in records:
        a = r["args"]
        if (a["trial_seed"], a["algorithm"], sorted(a["test_envs"])) == (trial, algorithm, sorted(envs)):
            out.setdefault(a["hparams_seed"], []).append(r)
    return {h: sorted(run, key=lambda r: r["step"]) for h, run in out.items()}


def _best_hparams(scored: dict[int, tuple[float, float]]) -> float:
    """DomainBed sorts runs by validation accuracy (stable, seeds ascending) and reverses: ties go to the highest
    seed."""
    best = max(scored.values(), key=lambda vt: vt[0])[0]
    return scored[max(h for h, (v, _) in scored.items() if v == best)][1]


def expected_accs(
    records, envs: int, trials: int, method: str, algorithm: str, test_env: int, test: str = "in_acc"
) -> list[float]:
    """The selected test accuracy (``env<test_env>_<test>``) of each trial seed, by ``method`` (``iid``, ``loo`` or
    ``oracle``)."""
    accs = []
    for trial in range(trials):
        single = _runs(records, trial, algorithm, [test_env])
        scored = {}
        for h, run in single.items():
            if method == "iid":  # argmax over checkpoints of the mean out-accuracy of the training envs (first max)
                best = None
                for r in run:
                    val = sum(r[f"env{i}_out_acc"] for i in range(envs) if i != test_env) / (envs - 1)
                    if best is None or val > best[0]:
                        best = (val, r[f"env{test_env}_{test}"])
                scored[h] = best
            elif method == "oracle":  # the last checkpoint; its test env's out part validates
                last = run[-1]
                scored[h] = (last[f"env{test_env}_out_acc"], last[f"env{test_env}_{test}"])
            else:  # leave one domain out: the other envs' in-accuracy, each in the run holding it out too
                best = None
                pairs = {j: _runs(records, trial, algorithm, [test_env, j])[h] for j in range(envs) if j != test_env}
                for k, record in enumerate(run):
                    pair_accs = [pair[k][f"env{j}_in_acc"] for j, pair in pairs.items()]
                    val = sum(pair_accs) / (envs - 1)
                    if best is None or val > best[0]:
                        best = (val, record[f"env{test_env}_{test}"])
                scored[h] = best
        accs.append(_best_hparams(scored))
    return accs


def mean_and_error(accs: list[float]) -> tuple[float, float]:
    """collect_results' cell: the mean and the standard error (population std / sqrt(n)) over trials, in percent."""
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    return 100 * mean, 100 * std / len(accs) ** 0.5
