"""CLI command modules. Importing this package imports every module in it, and each module
registers its commands with :func:`interp.cli.command` -- no hand-written list."""
from __future__ import annotations

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
