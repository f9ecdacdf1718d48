"""Streaming tests decode token by token (batch 1, many tiny matmuls): one CPU thread is
faster than several on a shared machine, and avoids pathological spin-waiting under load."""
import pytest
import torch

from interp.streaming import StreamingLM


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lm(smollm2_hf):
    """A StreamingLM over the session's HF smollm2 (one copy of the weights for all tests)."""
    model, tok = smollm2_hf
    return StreamingLM(model, tok)
