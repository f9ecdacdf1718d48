from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from interp.config import ConfigError, from_dict, load_toml, require_at_least, to_dict


@dataclass(frozen=True)
class Inner:
    width: int = 4
    name: str = "x"


@dataclass(frozen=True)
class Outer:
    steps: int
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    maybe: Optional[int] = None


def test_round_trip():
    cfg = from_dict(Outer, {"steps": 3, "lr": 1, "widths": [4, 8], "inner": {"width": 2}})
    assert cfg == Outer(steps=3, lr=1.0, widths=(4, 8), inner=Inner(width=2))
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize("data, match", [
    ({"steps": 1, "power_a": 0.1}, r"unknown field\(s\) \['power_a'\]"),
    ({"steps": 1, "inner": {"widht": 3}}, r"Outer.inner: unknown field"),
    ({}, "missing required field 'steps'"),
    ({"steps": "ten"}, "expected an integer"),
    ({"steps": True}, "expected an integer"),
    ({"steps": 1, "mode": "c"}, r"not one of \['a', 'b'\]"),
    ({"steps": 1, "widths": [1, "x"]}, r"widths\[1\]"),
])
def test_rejects_bad_configs(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_load_toml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_toml(bad)


def test_require_at_least_names_the_first_bad_field():
    @dataclass
    class Shape:
        width: int = 4
        depth: int = 0
        heads: int = -1

        def __post_init__(self):
            require_at_least(self, ("width", "depth", "heads"), 0)

    with pytest.raises(ValueError, match=r"^heads must be >= 0, got -1$"):
        Shape()
    assert Shape(heads=0).depth == 0
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        require_at_least(Shape(heads=3), ["width", "depth"], 1)
