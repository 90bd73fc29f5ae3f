"""Ceremony tasks: root key and certificate, subordinate key and CSR, subordinate signing, rehearsal."""

from __future__ import annotations

from invoke import Collection, Context, task

from ._cli import operator_errors


@task(help={"out": "output directory (default out/rehearsal)"})
@operator_errors
def rehearse(c: Context, out: str = "out/rehearsal") -> None:
    """Run every ceremony end to end on fresh SoftHSM tokens under OUT, without prompts."""
    from ceremony.rehearsal import run_rehearsal

    run_rehearsal(out)


ns = Collection()
