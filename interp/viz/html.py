"""Offline HTML building blocks: the inline JS bundles, safe JSON in scripts, and :class:`View`.

Architecture
------------
Every page interp writes must render with no network. Two JS libraries are involved:

- circuitsvis (React components for attention patterns). Its Python side builds a page either
  from a CDN import (``str(obj)``, blank offline) or with the whole bundle inline
  (``obj.local_src``). We use the same bundle (``circuitsvis/dist/cdn/iife.js``, which defines
  the global ``CircuitsVis``) but write the markup ourselves, so that a page holding several
  views carries the 1.3 MB bundle once, the mount point is a properly closed ``<div>`` (the
  upstream markup uses ``<div .../>``, which HTML does not close, so whatever follows ends
  up inside the element React replaces) and props are escaped for a ``<script>`` element.
- plotly.js (``plotly.offline.get_plotlyjs()``, ~4.6 MB), once per page.

A :class:`View` is an HTML fragment plus the set of bundles it needs. ``_repr_html_`` (Jupyter)
and :meth:`View.save` (standalone page) both put the bundles inline; :mod:`interp.report`
embeds many views in one page with each bundle written once.
"""
from __future__ import annotations

import html as _html
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from interp.paths import MissingPath
from interp.results import atomic_write_text
from interp.errors import InputError

CIRCUITSVIS = "circuitsvis"
PLOTLY = "plotly"
BUNDLES = (PLOTLY, CIRCUITSVIS)

_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
_CDN_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def script_safe(text: str) -> str:
    """Make JS source safe inside an inline ``<script>``: no ``</script`` and no ``<!--``
    (which would end the element or switch the HTML parser into its escaped state), and no
    source-map comment (a browser with devtools open would try to fetch it)."""
    text = _SOURCE_MAP.sub("", text)
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def json_for_script(obj: Any) -> str:
    """JSON text that is safe to put inside a ``<script>`` element (``<``, ``>``, ``&`` and
    the line separators escaped as ``\\uXXXX``; still valid JSON and JS)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


@lru_cache(maxsize=None)
def circuitsvis_js() -> str:
    """The circuitsvis browser bundle (defines the global ``CircuitsVis``), script-safe."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise MissingPath(f"the circuitsvis JS bundle is missing ({path}); reinstall "
                                f"circuitsvis (pip install --force-reinstall circuitsvis)")
    return script_safe(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def plotly_js() -> str:
    """plotly.js, minified, script-safe."""
    from plotly.offline import get_plotlyjs

    return script_safe(get_plotlyjs())


def bundle_scripts(needs: Iterable[str]) -> str:
    """``<script>`` elements with the inline bundles named in ``needs`` (fixed order)."""
    needs = set(needs)
    unknown = needs - set(BUNDLES)
    if unknown:
        raise InputError(f"unknown JS bundle(s) {sorted(unknown)}; known: {list(BUNDLES)}")
    parts = []
    if PLOTLY in needs:
        parts.append(f'<script type="text/javascript">{plotly_js()}</script>')
    if CIRCUITSVIS in needs:
        parts.append(f'<script type="text/javascript">{circuitsvis_js()}</script>')
    return "\n".join(parts)


def has_cdn_script(html: str) -> bool:
    """True when ``html`` loads a script from the network (``<script src="http...">`` or
    protocol-relative ``//``)."""
    return bool(_CDN_SCRIPT.search(html))


def circuitsvis_fragment(component: str, props: dict[str, Any], min_height: int = 0) -> str:
    """Mount point + render call for circuitsvis ``component`` (e.g. ``"AttentionHeads"``);
    needs the circuitsvis bundle on the page. ``None`` props are left out, as upstream."""
    mount = "circuits-vis-" + uuid.uuid4().hex[:12]
    props = {k: v for k, v in props.items() if v is not None}
    style = f"margin: 15px 0; min-height: {min_height}px;" if min_height else "margin: 15px 0;"
    return (f'<div id="{mount}" class="interp-circuitsvis" style="{style}"></div>\n'
            f'<script type="text/javascript">\n'
            f'CircuitsVis.render("{mount}", CircuitsVis.{component}, '
            f'{json_for_script(props)});\n</script>')


def page(title: str, body: str, needs: Iterable[str] = (), head: str = "") -> str:
    """A complete standalone HTML page with the bundles in ``needs`` inline in ``<head>``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_html.escape(title)}</title>\n{head}\n{bundle_scripts(needs)}\n"
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


@dataclass
class View:
    """An HTML visualisation that renders inline in Jupyter and saves as a standalone page.

    Attributes:
        body: the HTML fragment (mount points and render calls), without the JS bundles.
        needs: the inline bundles the fragment needs (``"circuitsvis"``, ``"plotly"``).
        title: page title for :meth:`save`.
        meta: free-form facts about the view (layers, heads, token range, ...).
    """

    body: str
    needs: frozenset[str] = frozenset()
    title: str = "interp view"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_html(self, include_bundles: bool = True) -> str:
        """The fragment, with its bundles inline in front of it when ``include_bundles``."""
        if include_bundles and self.needs:
            return bundle_scripts(self.needs) + "\n" + self.body
        return self.body

    def __repr__(self) -> str:
        return (f"View({self.title!r}, needs={sorted(self.needs)}, "
                f"{len(self.body) / 1e3:.0f} kB without bundles)")

    def _repr_html_(self) -> str:
        # Always the inline bundle: never circuitsvis' CDN import, never a network check.
        return self.to_html(include_bundles=True)

    def page(self) -> str:
        """A complete standalone HTML page (bundles inline)."""
        return page(self.title, self.body, self.needs)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`page` to ``path`` (atomically); returns the path."""
        return atomic_write_text(path, self.page())
