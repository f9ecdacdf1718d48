"""CUDA end to end: the same model, probe, swap, stream, patching and circuit results on the GPU
as on the CPU. Every test computes its CPU reference itself (models loaded with
``device="cpu"``, whatever ``--device`` says) and compares the CUDA result with it, never CUDA
with CUDA.

Two sets of models:

- tiny random checkpoints of every family (``tests/families/tiny.py``), built at run time
  from transformers' config classes: they need nothing carried, so these tests run wherever
  CUDA does (``benchmarks/gpu_check.sh``'s machine included);
- SmolLM2-135M from the interp cache: where the cache does not hold it (a bare GPU machine:
  the 538 MB copy cannot travel) those tests skip, naming the cache, instead of fetching it.

Every test here is marked ``cuda``: on a machine where torch sees no CUDA device they are
collected and skipped with the reason (tests/conftest.py).
"""
from __future__ import annotations

import pytest
import torch

import interp
from tests.families.tiny import CAUSAL, FAMILY_NAMES, load_reference

pytestmark = pytest.mark.cuda

CUDA = "cuda"
TEXT = "The lighthouse keeper climbed the stairs every night to light the lamp."
#: families whose every layer takes the linear swap (no sliding window, no soft-capping)
LINEAR_OK = ("llama", "qwen3", "gpt2", "gpt_neox", "phi3")


def _ids(n=24, seed=0):
    ids = torch.randint(4, 260, (2, n), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 1
    return ids


def _require_cached(name: str) -> None:
    """Skip (naming the cache) unless pretrained model ``name`` is in the interp cache: the
    tests must not start a download on a machine without network."""
    from interp.models.cache import cache_dir, is_cached

    if not is_cached(name):
        pytest.skip(f"{name} is not in the interp cache ({cache_dir()}); the tiny-family tests "
                    f"check the same code on CUDA")


@pytest.fixture(scope="module")
def tiny(family_dir):
    """``tiny(name, device)`` -> the tiny model of that family loaded on ``device`` (one per
    (name, device) for the module; CPU copies are the references)."""
    loaded = {}

    def get(name: str, device: str):
        if (name, device) not in loaded:
            model = interp.load_model(family_dir(name), device=device)
            assert next(model.parameters()).device.type == device
            loaded[name, device] = model
        return loaded[name, device]

    return get


@pytest.fixture(scope="module")
def smollm2_cuda():
    _require_cached("smollm2-135m")
    return interp.load_model("smollm2-135m", device=CUDA)


@pytest.fixture(scope="module")
def smollm2_cpu():
    """The CPU reference: loaded on the CPU whatever ``--device`` says (the shared ``smollm2``
    fixture follows ``--device``, so on a GPU run it would compare CUDA with CUDA)."""
    _require_cached("smollm2-135m")
    model = interp.load_model("smollm2-135m", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    return model


# -- tiny families ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_parity_and_softmax_swap_on_cuda(family_dir, tiny, name):
    """Bridge on CUDA equals HF eager on CPU; so does the softmax swap on CUDA."""
    model = tiny(name, CUDA)
    ref = load_reference(name, family_dir(name))
    ids = _ids()
    with torch.no_grad():
        want = ref(ids).logits
        got = model(ids.to(CUDA)).cpu()
        with interp.swap_attention(model, "softmax"):
            swapped = model(ids.to(CUDA)).cpu()
    scale = want.abs().max()
    assert (got - want).abs().max() < 1e-3
    assert (swapped - want).abs().max() < 1e-3 * max(1.0, float(scale))


@pytest.mark.parametrize("name", CAUSAL)
def test_tiny_probes_on_cuda_equal_cpu(tiny, name):
    from interp.probes.induction import induction_scores
    from interp.probes.locality import locality_scores
    from interp.probes.sink import sink_scores

    cpu, gpu = tiny(name, "cpu"), tiny(name, CUDA)
    a = induction_scores(cpu, batch=2, seg_len=20)
    b = induction_scores(gpu, batch=2, seg_len=20)
    cols = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying"]
    assert len(a) == len(b) == cpu.cfg.n_layers * cpu.cfg.n_heads
    assert (a[cols] - b[cols]).abs().max().max() < 1e-3
    assert (sink_scores(cpu, TEXT)["alpha"] - sink_scores(gpu, TEXT)["alpha"]).abs().max() < 1e-4
    assert (locality_scores(cpu, TEXT)["mass_inside"]
            - locality_scores(gpu, TEXT)["mass_inside"]).abs().max() < 1e-4


@pytest.mark.parametrize("name", LINEAR_OK)
def test_tiny_linear_swap_on_cuda_equals_cpu(tiny, name):
    """The linear swap (fla on CUDA where installed, the torch chunked form on CPU)."""
    cpu, gpu = tiny(name, "cpu"), tiny(name, CUDA)
    ids = _ids(40)
    with torch.no_grad():
        plain = cpu(ids)
        with interp.swap_attention(cpu, "linear", feature_map="elu", form="chunked"):
            want = cpu(ids)
        with interp.swap_attention(gpu, "linear", feature_map="elu", form="chunked"):
            got = gpu(ids.to(CUDA)).cpu()
    assert (want - plain).abs().max() > 1e-3          # the swap changed something
    assert (got - want).abs().max() < 1e-3 * max(1.0, float(want.abs().max()))


def test_tiny_bf16_probes_accumulate_in_float32(family_dir, tiny):
    from interp.probes.sink import sink_scores

    cpu = tiny("llama", "cpu")
    bf16 = interp.load_model(family_dir("llama"), device=CUDA, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    a, b = sink_scores(cpu, TEXT)["alpha"], sink_scores(bf16, TEXT)["alpha"]
    assert b.dtype == a.dtype
    assert (a - b).abs().max() < 3e-2          # bf16 activations; the averages in float32


@pytest.mark.parametrize("name", ["llama", "gemma3", "phi3"])
def test_tiny_streaming_and_generation_on_cuda(family_dir, name):
    from interp.generation import greedy_ids
    from interp.models.registry import load_hf
    from interp.streaming import StreamingLM

    cpu_model, tok = load_hf(str(family_dir(name)))
    gpu_model = load_hf(str(family_dir(name)))[0].to(CUDA)
    ids = _ids(30)[:1]
    with torch.no_grad():
        a = StreamingLM(cpu_model, tok).forward(ids)
        b = StreamingLM(gpu_model, tok).forward(ids.to(CUDA)).cpu()
    assert (a - b).abs().max() < 1e-3 * max(1.0, float(a.abs().max()))
    want = greedy_ids(cpu_model, ids[0].tolist(), 8)
    assert len(want[0]) >= 1
    assert greedy_ids(gpu_model, ids[0].tolist(), 8) == want


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt_neox"])
def test_tiny_head_patching_on_cuda_equals_cpu(tiny, name):
    from interp.circuits import induction_task, patch_heads

    dfs = []
    for device in ("cpu", CUDA):
        model = tiny(name, device)
        task = induction_task(model, batch=4, seg_len=8, seed=0)
        dfs.append(patch_heads(model, task, progress=False).sort_values(["layer", "head"]))
    a, b = (df.reset_index(drop=True) for df in dfs)
    assert len(a) == len(b) == model.cfg.n_layers * model.cfg.n_heads
    scale = max(1.0, float(a["metric"].abs().max()))
    assert (a["metric"] - b["metric"]).abs().max() < 1e-4 * scale
    assert a.attrs["clean"] == pytest.approx(b.attrs["clean"], abs=1e-4 * scale)


def test_path_patch_and_circuit_on_cuda(tiny):
    from interp.circuits.path import path_patch
    from interp.circuits.runner import CircuitRunner
    from interp.circuits.tasks import induction_task

    dfs, metrics = [], []
    for device in ("cpu", CUDA):
        model = tiny("llama", device)
        task = induction_task(model, batch=2, seg_len=6, seed=0)
        dfs.append(path_patch(model, task, [(0, 0), (0, 1)], [(1, 0)]))
        r = CircuitRunner(model, task)
        metrics.append((r.metric(r.valid), r.clean_metric, r.corrupted_metric))
    assert (dfs[0]["metric"] - dfs[1]["metric"]).abs().max() < 1e-4
    for cpu_value, gpu_value in zip(*metrics):
        assert float(gpu_value) == pytest.approx(float(cpu_value), abs=1e-4)
    assert float(metrics[1][0]) == pytest.approx(float(metrics[0][1]), abs=1e-4)  # all edges: clean


# -- SmolLM2 (only where the interp cache holds it) --------------------------------------------
def test_linear_swap_on_cuda_equals_cpu(smollm2_cpu, smollm2_cuda):
    ids = torch.tensor([[1, 504, 3458, 282, 260, 1345, 314, 253]])
    with torch.no_grad():
        with interp.swap_attention(smollm2_cpu, "linear", feature_map="elu", form="chunked"):
            cpu = smollm2_cpu(ids)
        with interp.swap_attention(smollm2_cuda, "linear", feature_map="elu", form="chunked"):
            gpu = smollm2_cuda(ids.to(CUDA)).cpu()
    assert (gpu - cpu).abs().max() < 1e-3 * cpu.abs().max()


def test_probes_on_cuda_equal_cpu(smollm2_cpu, smollm2_cuda):
    from interp.probes.induction import induction_scores
    from interp.probes.locality import locality_scores
    from interp.probes.sink import sink_scores

    smollm2 = smollm2_cpu
    a = induction_scores(smollm2, batch=2, seg_len=20)
    b = induction_scores(smollm2_cuda, batch=2, seg_len=20)
    cols = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying"]
    assert (a[cols] - b[cols]).abs().max().max() < 1e-3
    assert (sink_scores(smollm2, TEXT)["alpha"] - sink_scores(smollm2_cuda, TEXT)["alpha"]
            ).abs().max() < 1e-4
    long_text = " ".join([TEXT] * 4)          # longer than the layouts' 32-token windows
    assert (locality_scores(smollm2, long_text)["mass_inside"]
            - locality_scores(smollm2_cuda, long_text)["mass_inside"]).abs().max() < 1e-4


def test_bf16_probes_accumulate_in_float32(smollm2_cpu):
    from interp.probes.sink import sink_scores

    bf16 = interp.load_model("smollm2-135m", device=CUDA, dtype="bfloat16")
    text = "A sink is where attention goes when it has nowhere better to go."
    diff = (sink_scores(smollm2_cpu, text)["alpha"] - sink_scores(bf16, text)["alpha"]).abs()
    assert diff.max() < 3e-2          # bf16 activations; the averages themselves in float32


def test_streaming_and_generation_on_cuda():
    from interp.generation import greedy_ids
    from interp.models.registry import load_hf
    from interp.streaming import StreamingLM

    _require_cached("smollm2-135m")
    cpu_model, tok = load_hf("smollm2-135m")
    gpu_model = load_hf("smollm2-135m")[0].to(CUDA)
    ids = torch.tensor([[1, 504, 3458, 282, 260, 1345, 314, 253, 1155, 1248, 30]])
    a = StreamingLM(cpu_model, tok).forward(ids)
    b = StreamingLM(gpu_model, tok).forward(ids.to(CUDA)).cpu()
    assert (a - b).abs().max() < 1e-3
    assert greedy_ids(cpu_model, ids[0].tolist(), 8) == greedy_ids(gpu_model, ids[0].tolist(), 8)
