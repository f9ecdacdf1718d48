"""Streaming tests decode token by token (batch 1, many tiny matmuls): one CPU thread is
faster than several on a shared machine, and avoids pathological spin-waiting under load."""
import pytest
import torch

from interp.streaming import StreamingLM


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Token-by-token decoding: one CPU thread (see ``one_thread`` in tests/conftest.py)."""


@pytest.fixture(scope="session")
def lm(smollm2_hf):
    """A StreamingLM over the session's HF smollm2 (one copy of the weights for all tests)."""
    model, tok = smollm2_hf
    return StreamingLM(model, tok)
