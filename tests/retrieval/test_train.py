"""Training on MQAR: softmax attention recalls, elu+1 linear attention (same budget) does not.

Reference (REFERENCES.md, Zoology): attention reaches ~1.0 MQAR accuracy at every width;
linear attention falls behind as pairs grow relative to its state.
"""
from __future__ import annotations

import pytest
import torch

from interp.retrieval import (
    MixerSpec, RetrievalModelConfig, RetrievalSweepConfig, TrainConfig, evaluate,
    load_retrieval_config, run_retrieval_sweep, train_mqar,
)
from interp.retrieval.train import mqar_test_set
from interp.tasks import MQARConfig

from tests.retrieval.test_sweep import EXPERIMENT


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core box is fastest with one thread per process
    yield
    torch.set_num_threads(old)


TINY = MQARConfig(vocab_size=64, seq_len=16, num_kv_pairs=4)
TINY_TRAIN = TrainConfig(steps=300, batch_size=64, lr=3e-3, test_size=256)


def tiny_model(mixer: MixerSpec) -> RetrievalModelConfig:
    return RetrievalModelConfig(vocab_size=64, d_model=64, n_layers=2, max_len=16,
                                mixers=[mixer], short_conv=3)


def test_softmax_recalls_tiny_mqar_and_beats_linear_elu(one_thread):
    soft = train_mqar(tiny_model(MixerSpec("softmax")), TINY, TINY_TRAIN, progress=False)
    assert soft.accuracy > 0.9, soft.history.tail()
    lin = train_mqar(tiny_model(MixerSpec("linear", {"feature_map": "elu"})), TINY, TINY_TRAIN,
                     progress=False)
    assert soft.accuracy > lin.accuracy + 0.2, (soft.accuracy, lin.accuracy)
    # evaluate() agrees with the reported accuracy and is deterministic
    assert evaluate(soft.model, mqar_test_set(TINY, TINY_TRAIN)) == soft.accuracy


def test_training_is_seeded(one_thread):
    short = TrainConfig(steps=5, batch_size=8, test_size=16)
    cfg = tiny_model(MixerSpec("softmax"))
    a, b = train_mqar(cfg, TINY, short, progress=False), train_mqar(cfg, TINY, short,
                                                                     progress=False)
    assert a.history["loss"].tolist() == b.history["loss"].tolist()
    with pytest.raises(ValueError, match="does not fit"):
        train_mqar(cfg, MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4), short)


def test_lr_schedules():
    cos = TrainConfig(steps=100, warmup=10, lr=1.0, schedule="cosine")
    assert cos.lr_at(0) == pytest.approx(0.1) and cos.lr_at(10) == pytest.approx(1.0)
    assert cos.lr_at(99) == pytest.approx(0.1, abs=0.01)
    const = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert const.lr_at(50) == const.lr_at(99) == 1.0


@pytest.mark.slow
def test_quick_sweep_orders_softmax_above_linear(tmp_path):
    """The experiment's quick variant (about a minute on a quiet machine)."""
    cfg = load_retrieval_config(EXPERIMENT)
    table = run_retrieval_sweep(cfg, tmp_path, quick=True, progress=False)
    acc = table.set_index("impl")["accuracy"]
    assert acc["softmax"] > 0.9
    assert acc["softmax"] > acc["linear_elu"] + 0.3
    assert acc["softmax"] > acc["sliding_window"]
    assert isinstance(cfg, RetrievalSweepConfig)
