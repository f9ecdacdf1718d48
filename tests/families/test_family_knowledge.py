"""Family knowledge lives in interp/families/ only: outside it, no module of interp/ names a
TransformerLens bridge class, an HF model type, or a family-specific module attribute (in
code or in strings; comments and docstrings may explain families)."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "interp"
FAMILIES = ROOT / "families"

#: what only interp/families/ may name
FORBIDDEN = [
    r"\w*AttentionBridge", "NativeAttention", "model_type", "Conv1D",
    "original_component", "_original_component",
    # HF / bridge module attributes that differ between families
    "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
    "input_layernorm", "q_norm", "k_norm", "ln1_post", "ln2_post", "parallel_attn_mlp",
    "use_parallel_residual", "qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj", "c_attn",
    "self_attn", "embed_tokens", "rotary_emb", "lm_head", "final_logit_softcapping",
]
PATTERN = re.compile(r"\b(" + "|".join(FORBIDDEN) + r")\b")
#: (file, name) pairs that are not family knowledge
ALLOWED = {("interp/retrieval/model.py", "qkv_proj"): "interp's own MQAR model's projection"}


def _docstring_lines(source: str) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def family_names_in(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` for every forbidden name in the code or strings (not comments or
    docstrings) of a module's ``source``."""
    docs = _docstring_lines(source)
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.NAME, tokenize.STRING):
            continue
        if tok.type == tokenize.STRING and tok.start[0] in docs:
            continue
        hits += [(tok.start[0], m.group(0)) for m in PATTERN.finditer(tok.string)]
    return hits


def test_no_family_knowledge_outside_families():
    files = [p for p in sorted(ROOT.rglob("*.py")) if FAMILIES not in p.parents]
    assert len(files) > 50
    hits = [f"{rel}:{line}: {name}" for p in files
            for rel in [str(p.relative_to(ROOT.parent))]
            for line, name in family_names_in(p.read_text()) if (rel, name) not in ALLOWED]
    assert not hits, ("family-specific names outside interp/families/ (ask the model's adapter, "
                      "interp.families.family_of(model), instead):\n" + "\n".join(hits))


def test_the_check_sees_family_names():
    """The scan finds a family attribute in code and in an error message, and skips
    docstrings and comments."""
    source = ('"""Gemma\'s post_attention_layernorm is explained here."""\n'
              "def g(block):\n"
              '    """Reads q_norm (docstring)."""\n'
              "    # a comment about o_proj\n"
              "    x = block.ln1_post\n"
              '    raise ValueError(f"no {block.q_proj} here")\n')
    assert family_names_in(source) == [(5, "ln1_post"), (6, "q_proj")]
