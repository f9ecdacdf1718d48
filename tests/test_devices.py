"""Devices: every CLI command with ``--device`` and every experiment kind runs on the device
given (``pytest --device``, default cpu), and the models and tensors really are there.

The commands come from the CLI's own registry (``interp.cli._COMMANDS`` / ``_DEVICES``) and the
kinds from the experiment registry, so a new command or kind without an entry in ``COMMAND_ARGS``
/ ``KIND_CONFIGS`` below fails here instead of going unchecked. Where the models sit is seen
by a global module forward pre-hook: the device of every parameter and tensor input of every
module forward during the call. On a GPU machine ``pytest --device cuda tests/test_devices.py``
runs the same checks on CUDA.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp.commands  # noqa: F401  (registers every command)
from interp.cli import _COMMANDS, _DEVICES, build_parser, main
from interp.config import ConfigError, DeviceConfig
from interp.devices import DTYPE_NAMES
from interp.experiments import get_kind, kinds, run_experiment

SMOL = "smollm2-135m"


class ForwardDevices:
    """Global forward pre-hook: device types of the parameters and tensor inputs of every
    module forward while installed."""

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.calls = 0

    def __call__(self, module, args):
        self.calls += 1
        p = next(module.parameters(recurse=False), None)
        if p is not None:
            self.types.add(p.device.type)
        for a in args:
            if isinstance(a, torch.Tensor):
                self.types.add(a.device.type)


@pytest.fixture
def forwards():
    rec = ForwardDevices()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(rec)
    yield rec
    handle.remove()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny random Llama folder (byte tokenizer): any-model commands and kinds use it."""
    from tests.families.tiny import build_family

    return str(build_family("llama", tmp_path_factory.mktemp("tiny-llama")))


def _sweep_toml(path: Path) -> Path:
    """A retrieval sweep of one 2-step softmax model (the cheapest kind that trains)."""
    path.write_text('kind = "retrieval_sweep"\n[config]\nvocab_size = 16\nseq_len = 12\n'
                    'num_kv_pairs = [2]\nd_models = [8]\nregistry = false\nexclude = []\n'
                    'options = {}\nprobe_samples = 4\n'
                    '[[config.hybrids]]\nlabel = "soft"\nmixers = [{ name = "softmax" }]\n'
                    '[config.train]\nsteps = 2\nbatch_size = 4\ntest_size = 8\n')
    return path


#: the smallest arguments each command accepts (without --device/--dtype)
COMMAND_ARGS = {
    "probe": lambda tmp, tiny: ["probe", "induction", "--model", tiny, "--seg-len", "4",
                                "--batch", "1", "--format", "csv"],
    "view": lambda tmp, tiny: ["view", "--model", tiny, "--prompt", "abc abc",
                               "--out", str(tmp / "v.html")],
    "lens": lambda tmp, tiny: ["lens", "--model", tiny, "--prompt", "abc abc", "--answer", "70",
                               "--html", str(tmp / "l.html"), "--format", "csv"],
    "s2a": lambda tmp, tiny: ["s2a", "--model", SMOL, "--limit", "1", "--format", "csv"],
    "stream": lambda tmp, tiny: ["stream", "--model", SMOL, "--tokens", "24", "--window", "8",
                                 "--sinks", "2", "--chunk", "12", "--text", "pydoc-topics",
                                 "--format", "csv", "--threads", "1"],
    "train": lambda tmp, tiny: ["train", "toy-induction", "--steps", "2", "--no-control",
                                "--out", str(tmp / "toy")],
    "run": lambda tmp, tiny: ["run", str(_sweep_toml(tmp / "e.toml")), "--out",
                              str(tmp / "run"), "--no-progress"],
    "models": lambda tmp, tiny: ["models", "--format", "csv"],
}


def _check_device(rec: ForwardDevices, device: torch.device) -> None:
    assert rec.calls > 0, "no module forward ran"
    assert rec.types == {device.type}, f"forwards saw {rec.types}, expected {device.type}"


# -- the parser ------------------------------------------------------------------------------

def test_device_options_come_from_the_one_helper():
    """--device/--dtype exist exactly on the commands registered with devices=, with the
    defaults of the helper (auto / float32; none for run, which overrides the config)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(_COMMANDS)
    for name, p in sub.choices.items():
        opts = {a.dest: a for a in p._actions}
        assert ("device" in opts) == ("dtype" in opts) == (name in _DEVICES), name
        if name in _DEVICES:
            want = (None, None) if _DEVICES[name] == "override" else ("auto", "float32")
            assert (opts["device"].default, opts["dtype"].default) == want, name
            assert all(n in opts["dtype"].metavar for n in DTYPE_NAMES)


# -- every command on the device -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_DEVICES))
def test_command_runs_on_device(name, device, tiny, tmp_path, forwards, capsys, one_thread):
    assert name in COMMAND_ARGS, f"add the smallest arguments of `interp {name}` to COMMAND_ARGS"
    argv = COMMAND_ARGS[name](tmp_path, tiny) + ["--device", str(device)]
    assert main(argv) == 0, capsys.readouterr().err
    _check_device(forwards, device)
    if name == "run":
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        assert meta["status"] == "finished"
        assert meta["config"]["device"] == str(device)         # the option replaced "auto"
        assert torch.device(meta["device"]).type == device.type


@pytest.mark.parametrize("name", sorted(set(_COMMANDS) - set(_DEVICES)))
def test_command_without_device_makes_no_forward(name, tiny, tmp_path, forwards, capsys):
    """A command without --device must not run a model (else it needs the option)."""
    assert name in COMMAND_ARGS, f"add the smallest arguments of `interp {name}` to COMMAND_ARGS"
    assert main(COMMAND_ARGS[name](tmp_path, tiny)) == 0
    assert forwards.calls == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", sorted(_DEVICES))
def test_cuda_on_a_cpu_only_machine_exits_2(name, tiny, tmp_path, capsys, forwards):
    argv = COMMAND_ARGS[name](tmp_path, tiny) + ["--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"interp {name}: error:"), err
    assert "CUDA" in err[0] and "--device cpu" in err[0]
    assert forwards.calls == 0                                 # refused before any work


@pytest.mark.parametrize("bad", [["--dtype", "float64"], ["--device", "tpu"]])
def test_unknown_dtype_or_device_exits_2(bad, tiny, tmp_path, capsys):
    assert main(COMMAND_ARGS["probe"](tmp_path, tiny) + bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad[1] in err[0], err
    if bad[0] == "--dtype":
        assert all(n in err[0] for n in DTYPE_NAMES)


# -- every experiment kind on the device -----------------------------------------------------

def _interp_kinds() -> list[str]:
    """The kinds interp itself registers (test modules may register their own)."""
    return [k for k in kinds() if get_kind(k).run.__module__.startswith("interp.")]


#: a minimal [config] per kind (run with --quick)
KIND_CONFIGS = {
    "circuits": lambda tiny: {"model": "circuit-toy", "batch": 2, "seg_len": 4,
                              "method": "eap", "top_n": 5, "residual_patching": False},
    "linearised": lambda tiny: {"model": SMOL, "feature_maps": ["elu"], "n_pairs": 4,
                                "n_shots": 2, "n_prompts": 2},
    "quickstart": lambda tiny: {"model": tiny, "prompt": "the cat sat on the mat, the cat",
                                "seg_len": 4, "quick_batch": 1, "locality_windows": [4],
                                "top_k": 2, "view_seg_len": 4},
    "retrieval_sweep": lambda tiny: {
        "probe_samples": 4, "train": {"batch_size": 4},
        "quick": {"vocab_size": 16, "seq_len": 12, "num_kv_pairs": [2], "d_models": [8],
                  "steps": 2, "test_size": 8, "include": ["softmax"]}},
    "s2a": lambda tiny: {"model": SMOL, "quick_limit": 1, "answer_tokens": 2,
                         "rewrite_tokens": 4},
    "streaming": lambda tiny: {"model": tiny, "text": "pydoc-topics", "sinks": [0, 2],
                               "quick_sweep_tokens": 40, "quick_windows": [8],
                               "quick_stream_tokens": 24, "stream_window": 8,
                               "stream_sinks": 2, "chunk": 12, "recompute_stride": 8},
}


def test_every_kind_has_device_fields():
    for name in _interp_kinds():
        cls = get_kind(name).config_cls
        assert issubclass(cls, DeviceConfig), f"{name}: config must inherit DeviceConfig"
        assert cls().device == "auto" and cls().dtype == "float32"


@pytest.mark.parametrize("name", _interp_kinds())
def test_kind_runs_on_device(name, device, tiny, tmp_path, forwards, toy_induction_dir,
                             one_thread):
    assert name in KIND_CONFIGS, f"add a minimal config of kind {name!r} to KIND_CONFIGS"
    config = {**KIND_CONFIGS[name](tiny), "device": str(device)}
    out = run_experiment({"kind": name, "config": config}, out_dir=tmp_path / "run",
                         quick=True, progress=False)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["kind"] == name
    assert meta["config"]["device"] == str(device) and meta["config"]["dtype"] == "float32"
    assert torch.device(meta["device"]).type == device.type and meta["dtype"] == "float32"
    _check_device(forwards, device)


def test_kind_device_errors_name_the_field(tmp_path):
    """Checked when the run starts, with the config error wording (file: [config].field)."""
    exp = tmp_path / "e.toml"
    exp.write_text('kind = "retrieval_sweep"\n[config]\ndtype = "float64"\n')
    with pytest.raises(ConfigError, match=r"e\.toml: \[config\]\.dtype: 'float64' is not one"):
        run_experiment(exp, out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()                       # refused before the run
    if not torch.cuda.is_available():
        exp.write_text('kind = "retrieval_sweep"\n[config]\ndevice = "cuda"\n')
        with pytest.raises(ConfigError, match=r"\[config\]\.device: .*no CUDA device"):
            run_experiment(exp, out_dir=tmp_path / "o", progress=False)


# -- task batches ------------------------------------------------------------------------------

def test_task_batches_are_made_on_cpu_and_moved(device):
    """``device=``: the same tokens as the CPU batch of the same seed, on the device."""
    from interp.recipes.toy_induction import ToyInductionConfig, induction_batch
    from interp.tasks import (CopyConfig, InductionMixture, MQARConfig, NeedleConfig,
                              PhonebookConfig, mqar, repeated_tokens)

    makers = [CopyConfig().build, PhonebookConfig().build, NeedleConfig().build,
              MQARConfig().build, InductionMixture(vocab_size=50).build,
              lambda seed, device=None: mqar(4, 32, 16, 3, seed=seed, device=device),
              lambda seed, device=None: repeated_tokens(2, 5, vocab_size=20, seed=seed,
                                                        device=device),
              lambda seed, device=None: induction_batch(ToyInductionConfig(), seed,
                                                        device=device)]
    for make in makers:
        cpu, moved = make(3), make(3, device=device)
        cpu = (cpu,) if isinstance(cpu, torch.Tensor) else cpu
        moved = (moved,) if isinstance(moved, torch.Tensor) else moved
        for a, b in zip(cpu, moved, strict=True):
            assert a.device.type == "cpu" and b.device.type == device.type
            assert torch.equal(a, b.cpu())


# -- mixed precision training ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_training_keeps_float32_weights(dtype, device, tmp_path, one_thread):
    """``dtype`` below float32 trains with autocast (every registered attention implementation
    of the MQAR model, and the toy) while weights stay float32; losses stay finite."""
    from interp import attention
    from interp.recipes.toy_induction import ToyInductionConfig, train_toy_induction
    from interp.retrieval import MixerSpec, RetrievalModelConfig, TrainConfig, train_mqar
    from interp.tasks import MQARConfig

    for name in attention.names():
        res = train_mqar(RetrievalModelConfig(vocab_size=16, d_model=8, max_len=12,
                                              mixers=[MixerSpec(name)]),
                         MQARConfig(vocab_size=16, seq_len=12, num_kv_pairs=2),
                         TrainConfig(steps=2, batch_size=4, test_size=4), progress=False,
                         device=device, dtype=dtype)
        p = next(res.model.parameters())
        assert p.dtype == torch.float32 and p.device.type == device.type, name
        assert res.history["loss"].notna().all() and 0 <= res.accuracy <= 1, name
    hist = train_toy_induction(ToyInductionConfig(d_model=16, n_heads=2, d_head=8, steps=2,
                                                  control=False),
                               out_dir=tmp_path / "toy", progress=False, device=device,
                               dtype=dtype)
    assert hist["loss"].notna().all() and (tmp_path / "toy" / "model.safetensors").is_file()


# -- CUDA against CPU --------------------------------------------------------------------------

def _probe_table(tiny: str, device: str, capsys) -> pd.DataFrame:
    assert main(COMMAND_ARGS["probe"](Path("."), tiny) + ["--device", device]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


@pytest.mark.cuda
def test_cuda_probe_equals_cpu(tiny, capsys):
    cpu = _probe_table(tiny, "cpu", capsys)
    gpu = _probe_table(tiny, "cuda", capsys)
    assert list(cpu.columns) == list(gpu.columns) and len(cpu) == len(gpu)
    key = ["layer", "head"]
    cpu, gpu = cpu.sort_values(key).reset_index(drop=True), gpu.sort_values(key).reset_index(drop=True)
    assert (cpu[key] == gpu[key]).all().all()
    diff = (cpu.drop(columns=key) - gpu.drop(columns=key)).abs().max().max()
    assert diff <= 1e-4 + 1e-9, diff                           # the CLI prints 4 decimals
