"""Shared fixtures. Pretrained models come from the interp cache (filled on first use from
PyPI wheels); they are loaded once per session."""
from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device the shared model fixtures load on (cpu, cuda, cuda:N, auto)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    why = (f"no CUDA device (torch {torch.__version__}, CUDA build: "
           f"{torch.version.cuda or 'no'}): the cuda-marked tests run only on a GPU machine")
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """``auto`` devices (CLI defaults, experiment configs) follow ``--device`` in tests."""
    import os

    os.environ["INTERP_DEVICE"] = config.getoption("--device")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        # pytest-xdist (the README's test command runs 2 workers): split the cores between
        # the workers, and their child processes, instead of each spinning on all of them
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """The device of ``--device`` (default cpu), checked to exist."""
    from interp.devices import resolve_device

    return resolve_device(pytestconfig.getoption("--device"))


def _warm(model):
    """Run one tiny forward: the bridge wires its own capture hooks (two per block) on the
    first forward, so hook counts taken before and after a probe compare like with like
    whatever test runs first."""
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]], device=next(model.parameters()).device))
    return model


@pytest.fixture(scope="session")
def smollm2(device):
    import interp

    return _warm(interp.load_model("smollm2-135m", device=device))


@pytest.fixture(scope="session")
def smollm2_hf():
    from interp.models.registry import load_hf

    return load_hf("smollm2-135m")


@pytest.fixture(scope="session")
def minilm(device):
    import interp

    return _warm(interp.load_model("minilm-l6", device=device))


@pytest.fixture(scope="session")
def toy_model():
    """A small randomly initialised 2-layer attention-only toy model."""
    from interp.models.toy import ToyConfig, build_toy

    return _warm(build_toy(ToyConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=50,
                                     n_ctx=64, seed=0)))


@pytest.fixture
def one_thread():
    """Run the test on one CPU thread (batch-1 decoding: many tiny matmuls are faster on one
    thread than several on a shared machine, and avoid spin-waiting under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def toy_induction_dir():
    """Folder of the default toy induction recipe in the interp cache (main model; the
    1-layer control sits beside it as ``<name>-control``); trained once if missing."""
    from interp.recipes.toy_induction import ToyInductionConfig, ensure_toy_induction

    return ensure_toy_induction(ToyInductionConfig())


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir(name)`` -> folder holding a tiny random model of that family (built once
    per session; see tests/families/tiny.py)."""
    from tests.families.tiny import build_family

    built = {}

    def get(name: str):
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(f"family-{name}"))
        return built[name]

    return get
