"""Resume keys (#16): every saved point carries a hash of what determines it; a folder of
another experiment (config, quick, seed, dtype) is refused naming the differing field; a
stale point (other model weights, other interp version, no key at all) is recomputed."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest

from interp.config import ConfigError, DeviceConfig
from interp.experiments import RunContext, experiment, run_experiment
from interp.results import Sweep, point_key

CALLS: list[dict] = []


@dataclass(frozen=True)
class KeyedConfig(DeviceConfig):
    n_points: int = 3
    label: str = "demo"
    model: str = ""          # a toy checkpoint folder; "" = no model


@experiment("test_resume_keys", KeyedConfig)
def run_keyed(cfg: KeyedConfig, ctx: RunContext) -> None:
    """Points keyed on the run (and on the model's weights when a model is given)."""
    model = None
    if cfg.model:
        import interp

        model = interp.load_model(f"toy:{cfg.model}")
    sweep = ctx.sweep("points", model=model, n=3 if ctx.quick else cfg.n_points)
    n = 1 if ctx.quick else cfg.n_points
    for point in sweep.pending([{"i": i} for i in range(n)]):
        CALLS.append(point)
        sweep.record(point, {"value": point["i"]})
    ctx.add_table("points", sweep.table())


def _spec(**config):
    return {"kind": "test_resume_keys", "config": config}


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()


def test_point_key_is_canonical():
    assert point_key(a=1, b={"x": [1, 2], "y": 2}) == point_key(b={"y": 2, "x": (1, 2)}, a=1)
    assert point_key(a=1) != point_key(a=2) and len(point_key(a=1)) == 64


def test_quick_then_full_is_refused_naming_quick(tmp_path):
    run_experiment(_spec(), out_dir=tmp_path, quick=True, progress=False)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["key_fields"]["quick"] is True and len(meta["run_key"]) == 64
    with pytest.raises(ConfigError, match=r"quick: true -> false"):
        run_experiment(_spec(), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r'config\.label: "demo" -> "other"'):
        run_experiment(_spec(label="other"), out_dir=tmp_path, quick=True, progress=False)
    with pytest.raises(ConfigError, match=r'config\.dtype: "float32" -> "bfloat16"'):
        run_experiment(_spec(), out_dir=tmp_path, quick=True, progress=False,
                       dtype="bfloat16")


def test_device_change_resumes(tmp_path):
    run_experiment(_spec(device="cpu"), out_dir=tmp_path, progress=False)
    assert len(CALLS) == 3
    CALLS.clear()
    run_experiment(_spec(device="auto"), out_dir=tmp_path, progress=False, device="cpu")
    run_experiment(_spec(), out_dir=tmp_path, progress=False)
    assert CALLS == []


def test_other_version_recomputes_stale_points(tmp_path, monkeypatch, capsys):
    run_experiment(_spec(), out_dir=tmp_path, progress=False)
    CALLS.clear()
    monkeypatch.setattr("interp.experiments.interp_version", lambda: "99.0")
    run_experiment(_spec(), out_dir=tmp_path, progress=True)
    assert CALLS == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert "points: 3 stale point(s) recomputed (changed: interp)" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "points.csv")) == 3       # stale rows left out


def test_points_without_a_key_are_recomputed(tmp_path):
    legacy = Sweep(tmp_path)                     # a sweep without resume keys
    for p in legacy.pending([{"i": 0}, {"i": 1}]):
        legacy.record(p, {"value": -1})
    lines = [json.loads(x) for x in (tmp_path / "points.jsonl").read_text().splitlines()]
    for rec in lines:                            # as written before resume keys
        rec.pop("hash"), rec.pop("parts")
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert Sweep(tmp_path).done_keys() == {'{"i": 0}', '{"i": 1}'}   # keyless: still done
    run_experiment(_spec(), out_dir=tmp_path, progress=False)
    assert CALLS == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert list(pd.read_csv(tmp_path / "points.csv")["value"]) == [0, 1, 2]


def test_sweep_key_change_recomputes_and_old_key_is_still_valid(tmp_path):
    def run(key):
        sweep = Sweep(tmp_path, key=key)
        todo = list(sweep.pending([{"i": 0}, {"i": 1}]))
        for p in todo:
            sweep.record(p, {"v": key["w"]})
        return todo, sweep

    todo, _ = run({"w": 1, "config": {"a": 1}})
    assert len(todo) == 2
    todo, sweep = run({"w": 2, "config": {"a": 1}})
    assert len(todo) == 2 and sweep.stale == {"w": 2}
    assert "2 stale point(s) recomputed (changed: w)" in sweep.stale_message()
    assert list(sweep.table()["v"]) == [2, 2]          # old rows never override new ones
    todo, sweep = run({"w": 1, "config": {"a": 1}})
    assert todo == [] and list(sweep.table()["v"]) == [1, 1]


def _toy(path, seed):
    from interp.models.toy import ToyConfig, build_toy, save_toy

    model = build_toy(ToyConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=16,
                                n_ctx=16, seed=seed))
    save_toy(model, path, recipe={"recipe": "test", "seed": seed})


def test_other_model_weights_recompute_points(tmp_path, capsys):
    ckpt = tmp_path / "toy"
    _toy(ckpt, seed=0)
    out = tmp_path / "run"
    run_experiment(_spec(model=str(ckpt)), out_dir=out, progress=False)
    assert len(CALLS) == 3
    CALLS.clear()
    run_experiment(_spec(model=str(ckpt)), out_dir=out, progress=False)
    assert CALLS == []                                  # same weights: resumed
    _toy(ckpt, seed=1)                                  # retrained with another recipe
    run_experiment(_spec(model=str(ckpt)), out_dir=out, progress=True)
    assert len(CALLS) == 3
    assert "changed: model" in capsys.readouterr().err


def test_model_fingerprint_ignores_device_and_tracks_weights(tmp_path):
    import interp
    from interp.experiments import model_fingerprint

    _toy(tmp_path / "a", seed=0)
    _toy(tmp_path / "b", seed=1)
    fa = model_fingerprint(interp.load_model(f"toy:{tmp_path / 'a'}", device="cpu"))
    fa2 = model_fingerprint(interp.load_model(f"toy:{tmp_path / 'a'}"))
    fb = model_fingerprint(interp.load_model(f"toy:{tmp_path / 'b'}"))
    assert fa == fa2 and fa["recipe"] and fa["weights"]
    assert fa["weights"] != fb["weights"] and fa["recipe"] != fb["recipe"]
