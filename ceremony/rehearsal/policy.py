"""Rehearsal stage: the CP and CPS, in French and English, as Markdown, HTML and PDF, then checked.

Runs after the CA ceremonies, the CRLs and the key backup, so the documents describe the rehearsal's
real certificates and CRLs. The files go to ``<out>/docs/`` and into the manifest with kinds ``cp`` and
``cps``, ``format`` md|html|pdf and ``lang`` fr|en; the stage then runs the same check as
``invoke docs.check`` on what it wrote.
"""

from __future__ import annotations

from typing import Any

from ceremony.policy.check import check_documents
from ceremony.policy.render import build_documents


def rehearse(ctx: Any) -> None:
    result = build_documents(ctx.definition, ctx.out)
    ctx.manifest.reload()
    checked = check_documents(ctx.definition, ctx.out)
    slowest = max(result.pdf_seconds.values(), default=0.0)
    ctx.console.print(f"CP/CPS: {len(result.written)} files written under {ctx.out / 'docs'} "
                      f"({len(result.pdf_seconds)} PDFs, slowest {slowest:.1f} s); "
                      f"docs.check passed on {len(checked)} files")
