"""Developer tasks: the whole test suite and the linters."""

from __future__ import annotations

from invoke import Context, task


@task
def lint(c: Context) -> None:
    """ruff over the Python code."""
    c.run(".venv/bin/ruff check ceremony tasks tests plugins scripts", pty=False)


@task(help={"k": "only tests matching this expression", "fast": "skip the infrastructure tests"})
def test(c: Context, k: str = "", fast: bool = False) -> None:
    """ruff, then the whole pytest suite (unit, SoftHSM integration, infrastructure, benchmarks)."""
    lint(c)
    args = ["-q"]
    if k:
        args += ["-k", repr(k)]
    if fast:
        args += ["-m", "'not infra'"]
    c.run(".venv/bin/pytest " + " ".join(args), pty=False)
