"""Experiment kinds. Importing this package imports every module in it; each module
registers one or more kinds with :func:`interp.experiments.experiment` -- no hand-written
list. A new kind is one new module here."""
from __future__ import annotations

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
