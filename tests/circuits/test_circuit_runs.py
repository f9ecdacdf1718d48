"""The scripted circuit runs of experiments/ (IOI and greater-than on SmolLM2, IOI on Gemma 3):
each config loads, names a task the kind knows, and (slow) runs with --quick (shrunk: SMALL) to a
report whose summary states the clean/corrupted metrics the task itself gives, with the direct
logit attribution table adding up to the model's logit difference and every method's
faithfulness curve running from corrupted (no edges) to clean (all edges)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from interp.config import ConfigError, from_dict
from interp.experiment_kinds.circuits import TASKS, CircuitsConfig
from interp.experiments import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("circuits_ioi_smollm2", "circuits_greater_than_smollm2", "circuits_ioi_gemma3")
#: configs that load here but are not run by the tests (the docstring run patches the 0.5B
#: Qwen coder's 336 heads: minutes; its task is tested in tests/circuits/test_docstring_task.py)
LOAD_ONLY = ("circuits_docstring_qwen05",)


@pytest.mark.parametrize("name", CONFIGS + LOAD_ONLY)
def test_configs_load(name):
    kind, cfg, spec = load_experiment(ROOT / "experiments" / f"{name}.toml")
    assert kind.name == "circuits" and cfg.task in TASKS
    assert cfg.task in name


def test_unknown_task_is_refused_at_load():
    with pytest.raises(ConfigError, match="task must be one of induction, kv_retrieval, ioi"):
        from_dict(CircuitsConfig, {"task": "ioi2"})


#: the scripted runs' configs shrunk for the test (the run's stages all still run: patching,
#: attribution, discovery, the method comparison with its real curve forwards, DLA)
SMALL = {"quick_batch": 4, "method": "eap", "top_n": 30, "compare": ["eap", "eap-ig"],
         "ig_steps": 2, "quick_curve_points": 3}


def _run(name, tmp_path):
    import tomllib

    from interp.experiments import run_experiment

    spec = tomllib.loads((ROOT / "experiments" / f"{name}.toml").read_text())
    spec["config"].update(SMALL)
    out = run_experiment(spec, out_dir=tmp_path / name, quick=True, progress=False)
    return out, spec, (out / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_quick_run_reports_the_task(name, tmp_path):
    import interp
    from interp.circuits.standard_tasks import task_baseline
    from interp.experiment_kinds.circuits import _task_maker

    out, spec, report = _run(name, tmp_path)
    _, cfg, _ = load_experiment(spec)
    model = interp.load_model(cfg.model)
    task = _task_maker(cfg, model)(cfg.quick_batch, cfg.seed)
    ref = task_baseline(model, task)
    assert ref["clean"] > ref["corrupted"]
    assert f"clean metric {ref['clean']:.3f}, corrupted {ref['corrupted']:.3f}" in report
    if cfg.task == "ioi":                   # the metric is the DLA's logit difference
        dla = pd.read_csv(out / "direct_logit_attribution.csv")
        assert math.isclose(dla.value.sum(), ref["clean"], rel_tol=1e-3, abs_tol=1e-3)
    else:                                   # greater-than: a probability mass, no one answer
        assert not (out / "direct_logit_attribution.csv").exists()
    methods = pd.read_csv(out / "method_comparison.csv")
    assert methods.method.tolist() == ["eap", "eap-ig"]
    curves = pd.read_csv(out / "faithfulness_curves.csv")
    for m, g in curves.groupby("method"):       # 0 edges = corrupted, all edges = clean
        g = g.sort_values("n_edges")
        assert abs(g.normalised.iloc[0]) < 1e-3 and abs(g.normalised.iloc[-1] - 1) < 1e-3, m
