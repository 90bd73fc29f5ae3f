"""HTML to PDF, one way for every document the suite prints (CP/CPS, transcript reports, paper scripts).

WeasyPrint gives real text (DejaVu fonts from the system, so ``pdftotext`` and screen readers read
it), bookmarks from the headings and page numbers from the stylesheets. Its metadata comes from the
HTML only (title, no creation date), so a PDF is as reproducible as its HTML. Its warnings about
fonts go to its loggers, which are kept quiet: a missing glyph shows in the document checks.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from weasyprint import HTML

from ceremony.common import child_process
from ceremony.common.errors import OutputError


def render_pdf(html: str, base_url: Path) -> bytes:
    """The PDF of ``html``; relative URLs (stylesheets, images) resolve against ``base_url``."""
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return bytes(HTML(string=html, base_url=str(base_url)).write_pdf())


def pdf_text(path: Path) -> str:
    """The PDF's text layer, as ``pdftotext`` (poppler-utils) extracts it: what a reader of the PDF gets."""
    tool = shutil.which("pdftotext")
    if tool is None:
        raise OutputError("pdftotext (poppler-utils) is not installed: scripts/bootstrap.sh installs it")
    result = child_process.run([tool, "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=120)
    if result.returncode != 0:
        raise OutputError(f"{path}: pdftotext cannot read it: {result.stderr.decode(errors='replace').strip()}")
    return bytes(result.stdout).decode("utf-8")
