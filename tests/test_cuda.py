"""CUDA end to end: the same model, probe, swap, stream and circuit results on the GPU as on
the CPU. Every test here is marked ``cuda``: on a machine where torch sees no CUDA device
they are collected and skipped with the reason (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import interp
from tests.families.tiny import FAMILY_NAMES, load_reference

pytestmark = pytest.mark.cuda

CUDA = "cuda"


def _ids(n=24, seed=0):
    ids = torch.randint(4, 260, (2, n), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 1
    return ids


@pytest.fixture(scope="module")
def smollm2_cuda():
    return interp.load_model("smollm2-135m", device=CUDA)


@pytest.fixture(scope="module")
def smollm2_cpu():
    """The CPU reference: loaded on the CPU whatever ``--device`` says (the shared ``smollm2``
    fixture follows ``--device``, so on a GPU run it would compare CUDA with CUDA)."""
    model = interp.load_model("smollm2-135m", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    return model


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_parity_and_softmax_swap_on_cuda(family_dir, name):
    """Bridge on CUDA equals HF eager on CPU; the softmax swap is exact on CUDA too."""
    folder = family_dir(name)
    model = interp.load_model(folder, device=CUDA)
    ref = load_reference(name, folder)
    ids = _ids()
    with torch.no_grad():
        want = ref(ids).logits
        got = model(ids.to(CUDA))
        with interp.swap_attention(model, "softmax"):
            swapped = model(ids.to(CUDA))
    assert (got.cpu() - want).abs().max() < 1e-3
    assert (swapped - got).abs().max() <= 1e-5 * got.abs().max()


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

    text = "The lighthouse keeper climbed the stairs every night to light the lamp."
    smollm2 = smollm2_cpu
    a = induction_scores(smollm2, batch=2, seg_len=20)
    b = induction_scores(smollm2_cuda, batch=2, seg_len=20)
    cols = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying"]
    assert (a[cols] - b[cols]).abs().max().max() < 1e-3
    assert (sink_scores(smollm2, text)["alpha"] - sink_scores(smollm2_cuda, text)["alpha"]
            ).abs().max() < 1e-4
    assert (locality_scores(smollm2, text)["mass_inside"]
            - locality_scores(smollm2_cuda, text)["mass_inside"]).abs().max() < 1e-4


def test_bf16_probes_accumulate_in_float32(smollm2_cpu):
    from interp.probes.sink import sink_scores

    smollm2 = smollm2_cpu
    bf16 = interp.load_model("smollm2-135m", device=CUDA, dtype="bfloat16")
    text = "A sink is where attention goes when it has nowhere better to go."
    diff = (sink_scores(smollm2, text)["alpha"] - sink_scores(bf16, text)["alpha"]).abs()
    assert diff.max() < 3e-2          # bf16 activations; the averages themselves in float32


def test_streaming_and_generation_on_cuda(smollm2_hf):
    from interp.generation import greedy_ids
    from interp.models.registry import load_hf
    from interp.streaming import StreamingLM

    cpu_model, tok = smollm2_hf
    gpu_model, _ = load_hf("smollm2-135m")
    gpu_model = gpu_model.to(CUDA)
    ids = torch.tensor([[1, 504, 3458, 282, 260, 1345, 314, 253, 1155, 1248, 30]])
    a = StreamingLM(cpu_model, tok).forward(ids)
    b = StreamingLM(gpu_model, tok).forward(ids.to(CUDA)).cpu()
    assert (a - b).abs().max() < 1e-3
    assert greedy_ids(cpu_model, ids[0].tolist(), 8) == greedy_ids(gpu_model, ids[0].tolist(), 8)


def test_path_patch_and_circuit_on_cuda(family_dir):
    from interp.circuits.path import path_patch
    from interp.circuits.runner import CircuitRunner
    from interp.circuits.tasks import induction_task

    cpu = interp.load_model(family_dir("llama"), device="cpu")
    gpu = interp.load_model(family_dir("llama"), device=CUDA)
    dfs = []
    for model in (cpu, gpu):
        task = induction_task(model, batch=2, seg_len=6, seed=0)
        dfs.append(path_patch(model, task, [(0, 0), (0, 1)], [(1, 0)]))
        r = CircuitRunner(model, task)
        assert r.metric(r.valid) == pytest.approx(r.clean_metric, abs=1e-4)
    assert (dfs[0]["metric"] - dfs[1]["metric"]).abs().max() < 1e-4
