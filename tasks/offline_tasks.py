"""The offline check on its own: what the root ceremonies check first, before anyone signs in.

Thin: the engine (``ceremony.ceremonies.offline``) reads the interfaces of the current network namespace; this
task prints one line per interface and the verdict, and exits 0 only when nothing but loopback is up.
See docs/air-gapped.md.
"""

from __future__ import annotations

from invoke import Context, task

from ._cli import operator_errors


@task
@operator_errors
def offline_check(c: Context) -> None:
    """Check that no network interface other than loopback is up (as the root ceremonies do)."""
    from ceremony.ceremonies.offline import check_offline

    result = check_offline(enforce=False)
    print(f"network interfaces in this network namespace (read with {result.method}):")
    for name, state in result.interfaces.items():
        print(f"  {name}: {state}")
    print(result.summary())
    if not result.offline:
        raise result.refusal()
