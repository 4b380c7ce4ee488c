"""Self-contained HTML reports for `compare`, `audit` and `search`.

One file each: inline CSS and inline SVG, no scripts, no fonts, no web addresses (those quoted from
model files are shown defanged), every string read from a model escaped. The markup is in
``templates/`` (Jinja2, autoescaped), the SVG in `svg.py`::

    from unshell.report import audit_html, compare_html, write_html

    write_html(compare_html(unshell.compare("base", "suspect")), "report.html")
"""

from __future__ import annotations

from .html import audit_html, compare_html, search_html, write_html

__all__ = ["audit_html", "compare_html", "search_html", "write_html"]
