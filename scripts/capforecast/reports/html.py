"""Executed report notebooks -> one self-contained HTML file that opens offline."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"


def notebook_html(notebook: str | Path, *, hide_code: bool = True) -> str:
    """HTML of an executed notebook: images embedded, code and prompts hidden, no script from
    a CDN.

    Same as ``jupyter nbconvert --to html --no-input --no-prompt --embed-images`` with the
    ``offline`` template (``templates/offline``: JupyterLab's look without require.js, MathJax
    or mermaid; wide tables scroll sideways and long text cells wrap).
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="offline",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=hide_code,
        # No "In [ ]:" / "Out[6]:" prompts: the reader never sees the code they number.
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    html, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return html
