"""The private TransformerLens names interp relies on (interp/families/tl.py) still exist in
the installed TransformerLens: a release that renames one fails here, naming it, instead of
deep inside a swapped forward."""
from __future__ import annotations

import importlib

import interp
from interp.families import family_of, tl


def test_every_private_name_exists():
    gone = tl.missing()
    assert not gone, (
        "TransformerLens no longer has these private names that interp/families/tl.py uses "
        f"(renamed or removed in this release): {gone}. Update interp/families/tl.py and the "
        "transformer-lens pin in pyproject.toml together.")


def test_instance_attributes_exist_on_a_loaded_bridge(family_dir):
    """The attributes TransformerLens sets in ``__init__`` (not visible on the class)."""
    model = interp.load_model(family_dir("qwen3"))
    attn = model.blocks[0].attn
    for cls, names in tl.INSTANCE_ATTRIBUTES.items():
        assert type(attn).__name__ == cls
        gone = [n for n in names if not hasattr(attn, n)]
        assert not gone, f"TransformerLens' {cls} no longer sets {gone} (interp/families/tl.py)"
    assert tl.qk_norm_layout(attn)[0] == "post_reshape"      # Qwen3: per-head norm over d


def test_missing_names_are_reported_by_name(monkeypatch):
    """missing() names a private method a release dropped (here: faked away)."""
    mod, cls = next(k for k, names in tl.PRIVATE.items() if "_process_output" in names)
    klass = getattr(importlib.import_module(mod), cls)
    monkeypatch.delattr(klass, "_process_output")
    assert f"{mod}.{cls}._process_output" in tl.missing()


def test_every_registered_bridge_class_is_listed(family_dir, toy_model):
    """Each adapter's bridge classes are TransformerLens classes this module knows of (so a
    rename of the class itself shows up in missing())."""
    listed = {cls for _, cls in tl.PRIVATE} | {"AttentionBridge"}
    for name in ("llama", "gpt2", "gpt_neox", "bert"):
        fam = family_of(interp.load_model(family_dir(name)))
        assert set(fam.bridges) <= listed, (name, fam.bridges)
    assert set(family_of(toy_model).bridges) <= listed
