"""The page `dvc plots show` writes, made to draw without a network.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it is blank. This writes
an HTML template with the three libraries inlined, taken from vl-convert-python (a PyPI package
pinned in requirements.lock that carries them, offline), and `.dvc/config` names it
(`plots.html_template`). DVC fills the template's `{plot_divs}` with one `vegaEmbed(...)` call per
plot, as on its own page. `make` writes it (`python -m tasks.bookkeeping.plots .dvc/plots.html`).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The Vega-Lite version the page compiles with: the newest 5.x vl-convert-python carries. DVC's
# templates are Vega-Lite 5 specs (its own page loads vega-lite@5.2.0).
VEGA_LITE = "5.21"
# DVC replaces these in the template (plain text replacement, not str.format).
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# What the bundle exposes. DVC's page calls vegaEmbed(element, spec) once per plot; this one draws
# SVG, whose marks are elements of the page (sharp at any zoom, and what a headless browser checks).
SNIPPET = """
window.vega = vega;
window.vegaLite = vegaLite;
window.vegaEmbed = (element, spec, options) => vegaEmbed(element, spec, {renderer: "svg", ...options});
"""

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- Vega %(vega)s, Vega-Lite %(vega_lite)s and Vega-Embed %(vega_embed)s from vl-convert-python
         %(vl_convert)s, inlined: the page needs no network. Written by
         `python -m tasks.bookkeeping.plots`; do not edit. The bundle runs in a function of its own,
         so that its top-level names cannot clash with the `var spec` of DVC's plots. -->
    <script>(function () {
%(bundle)s
})();</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script that sets them on `window`, safe to inline."""
    import vl_convert

    script: str = vl_convert.javascript_bundle(SNIPPET, vl_version=VEGA_LITE)
    # Inside an inline <script>, "</script" would end the element; "<\\/" means the same in JavaScript.
    script = script.replace("</script", "<\\/script")
    found = [placeholder for placeholder in PLACEHOLDERS if placeholder in script]
    if found:  # DVC would replace them inside the library's code
        raise RuntimeError(f"the Vega bundle contains DVC's placeholder {found[0]}")
    return script


def page() -> str:
    """The template's text: the page DVC fills, with the libraries inlined."""
    from importlib.metadata import version

    import vl_convert

    return PAGE % {
        "bundle": bundle(),
        "vl_convert": version("vl-convert-python"),
        "vega": vl_convert.get_vega_version(),
        "vega_lite": VEGA_LITE,
        "vega_embed": vl_convert.get_vega_embed_version(),
    }


def write_template(path: Path) -> None:
    """Write the template at `path`, whole."""
    from tasks.fsutil import write_text

    write_text(path, page())


if __name__ == "__main__":
    write_template(Path(sys.argv[1]))
