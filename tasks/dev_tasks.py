"""Developer tasks: the whole test suite and the linters."""

from __future__ import annotations

from invoke import Context, task


@task
def lint(c: Context) -> None:
    """ruff over the Python code, then mypy over the engine (pyproject.toml [tool.mypy]: strict on the runner)."""
    c.run(".venv/bin/ruff check ceremony tasks tests plugins scripts", pty=False)
    c.run(".venv/bin/mypy", pty=False)


@task(help={"k": "only tests matching this expression", "fast": "skip the infrastructure tests"})
def test(c: Context, k: str = "", fast: bool = False) -> None:
    """ruff, then the whole pytest suite (unit, SoftHSM integration, walks, infrastructure).

    Two runs: everything but the infrastructure tests on two workers (``--dist loadgroup`` keeps each
    ordered walk on one worker), then the infrastructure tests alone, in one process, because they share
    one set of throwaway hosts under an exclusive lock. This keeps the suite well under 30 minutes on the
    2-core machine CI runs on.
    """
    lint(c)
    select = ["-k", repr(k)] if k else []
    # --durations: the slowest tests are printed with every run, so that the 30 minutes are watched
    c.run(" ".join([".venv/bin/pytest", "-q", "-n", "2", "--dist", "loadgroup", "-m", "'not infra'",
                    "--durations=15", *select]), pty=False)
    if not fast:
        # Exit 5 (nothing selected, e.g. -k matching no infrastructure test) is not a failure here.
        result = c.run(" ".join([".venv/bin/pytest", "-q", "-m", "infra", "--durations=15", *select]), pty=False,
                       warn=True)
        if result is not None and result.exited not in (0, 5):
            raise SystemExit(result.exited)
