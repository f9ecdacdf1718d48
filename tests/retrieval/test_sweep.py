"""The retrieval sweep: resumes, writes its outputs, rejects unknown config fields."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from interp import attention
from interp.config import ConfigError, from_dict
from interp.retrieval import RetrievalSweepConfig, load_retrieval_config, sweep_points
from interp.retrieval import sweep as sweep_mod
from interp.retrieval import train as train_mod

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "retrieval_mqar.toml"


def micro_data(**kw) -> dict:
    labels = RetrievalSweepConfig(exclude=[]).implementations()
    keep = {"softmax", "linear_elu", "based"}
    return {
        "vocab_size": 16, "seq_len": 12, "num_kv_pairs": [2], "d_models": [8, 16],
        "mlp_ratio": 1, "exclude": [lab for lab in labels if lab not in keep],
        "train": {"steps": 2, "batch_size": 4, "test_size": 8, "warmup": 1},
        "probe_samples": 4, **kw,
    }


def micro_config(**kw) -> RetrievalSweepConfig:
    return from_dict(RetrievalSweepConfig, micro_data(**kw))


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = train_mod.train_mqar

    def counted(*args, **kwargs):
        calls.append(args[0].mixers)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_mqar", counted)
    return calls


def test_sweep_library_returns_tables_and_resumes(tmp_path, count_training):
    cfg = micro_config()
    res = sweep_mod.retrieval_sweep(cfg, progress=False)      # no folder: nothing written
    assert set(res.bottleneck.columns) and len(res.table) == 6
    count_training.clear()
    table = sweep_mod.run_retrieval_sweep(cfg, tmp_path, progress=False)
    assert len(count_training) == 3 * 2
    assert list(table["impl"].unique()) == ["softmax", "linear_elu", "based"]
    for col in ("impl", "d_model", "num_kv_pairs", "accuracy", "state_size", "eff_rank",
                "energy_rank", "row_entropy"):
        assert col in table.columns
    assert table["accuracy"].between(0, 1).all()
    # state size grows with width for every implementation
    for _, g in table.groupby("impl"):
        assert g.sort_values("d_model")["state_size"].is_monotonic_increasing
    # the library writes only its sweep points; the experiment kind writes everything else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.jsonl"]

    again = sweep_mod.run_retrieval_sweep(cfg, tmp_path, progress=False)
    assert len(count_training) == 6  # nothing retrained
    pd.testing.assert_frame_equal(again, table)

    # one more width: only the new points train, the table holds all of them
    wider = micro_config(d_models=[8, 16, 24])
    t3 = sweep_mod.run_retrieval_sweep(wider, tmp_path, progress=False)
    assert len(count_training) == 9 and len(t3) == 9


def test_kind_is_the_only_writer(tmp_path, count_training):
    from interp.experiments import run_experiment

    out = run_experiment({"kind": "retrieval_sweep", "config": micro_data()},
                         out_dir=tmp_path, progress=False)
    assert len(count_training) == 6
    for name in ("retrieval.csv", "run.json", "report.html", "points.jsonl",
                 "figures/accuracy_vs_state.html", "figures/accuracy_vs_width.html",
                 "bottleneck_vs_error.csv"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "retrieval.csv")
    assert len(table) == 6
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["d_models"] == [8, 16] and meta["status"] == "finished"
    html = (out / "figures" / "accuracy_vs_state.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=[\"']?https?:", html)  # nothing from a CDN
    assert '"type":"log"' in html.replace(" ", "")
    run_experiment({"kind": "retrieval_sweep", "config": micro_data()}, out_dir=tmp_path,
                   progress=False)
    assert len(count_training) == 6          # resumed: nothing retrained


def test_changed_setup_is_a_new_point():
    a, b = sweep_points(micro_config()), sweep_points(micro_config(short_conv=2))
    assert [p["impl"] for p in a] == [p["impl"] for p in b]
    assert not {p["setup"] for p in a} & {p["setup"] for p in b}


def test_implementations_come_from_the_registry():
    impls = RetrievalSweepConfig(exclude=[]).implementations()
    expected = [n for n in attention.names()
                if n != "linear" and not attention.get_class(n).same_math_as]
    assert "softmax_rows" not in impls         # softmax's math again: nothing to sweep
    expected += [f"linear_{fm}" for fm in attention.feature_maps()]
    assert set(expected) <= set(impls)
    assert "based" in impls
    assert [m.name for m in impls["based"].mixers] == ["linear", "sliding_window"]
    assert impls["linear_taylor"].mixers[0].options["feature_map"] == "taylor"


def test_unknown_fields_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RetrievalSweepConfig, {"d_model": [32]})
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RetrievalSweepConfig, {"train": {"train_power_a": 0.01}})
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RetrievalSweepConfig, {"quick": {"step": 10}})
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RetrievalSweepConfig, {"hybrids": [{"label": "x", "mixer": []}]})
    with pytest.raises(ConfigError, match="valid: "):
        from_dict(RetrievalSweepConfig, {"exclude": ["no_such_impl"]}).implementations()
    with pytest.raises(ConfigError, match="pairs"):
        from_dict(RetrievalSweepConfig, {"seq_len": 16, "num_kv_pairs": [8]})
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "retrieval_sweep"\nextra = 1\n[config]\n')
    with pytest.raises(ConfigError, match="extra"):
        load_retrieval_config(bad)
    bad.write_text('kind = "quickstart"\n[config]\n')
    with pytest.raises(ConfigError, match="kind"):
        load_retrieval_config(bad)
    bad.write_text('kind = "retrieval_sweep"\n[config]\nseq_len = 64\nseqlen = 32\n')
    with pytest.raises(ConfigError, match="seqlen"):
        load_retrieval_config(bad)


def test_experiment_file_loads_and_quick_variant():
    cfg = load_retrieval_config(EXPERIMENT)
    impls = cfg.implementations()
    assert "softmax" in impls and "based" in impls and "linear_elu" in impls
    quick = cfg.quick_variant()
    assert set(quick.implementations()) == set(cfg.quick.include)
    assert quick.seq_len == cfg.quick.seq_len and quick.train.steps == cfg.quick.steps
    assert len(sweep_points(quick)) < len(sweep_points(cfg))
