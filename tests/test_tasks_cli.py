"""The Invoke front door as a whole: every task registered, every option spelled out."""

from __future__ import annotations

import sys

from conftest import REPO
from invoke import Collection

sys.path.insert(0, str(REPO))  # Invoke loads ``tasks`` from the repository root, as the operator does
import tasks


def _all_tasks(coll: Collection, prefix: str = "") -> dict[str, object]:
    found = {prefix + name: t for name, t in coll.tasks.items()}
    for name, sub in coll.collections.items():
        found |= _all_tasks(sub, f"{prefix}{name}.")
    return found


def test_every_stage_has_its_tasks() -> None:
    names = set(_all_tasks(tasks.ns))
    assert {"rehearse", "test", "ceremony.root", "ceremony.subordinate-key", "ceremony.sign-subordinate",
            "audit.verify", "audit.report", "ca.issue", "ca.revoke", "ca.list", "crl.sign", "crl.root-batch",
            "bench.crl", "backup.create", "backup.restore", "docs.build", "docs.check", "hosts.up",
            "hosts.down"} <= {n.replace("_", "-") for n in names}


def test_no_task_has_one_letter_options() -> None:
    """Automatic one-letter options would make ``-h`` mean ``--rehearsal`` on some tasks."""
    for name, t in _all_tasks(tasks.ns).items():
        for arg in t.get_arguments():
            assert len(arg.names) == 1, f"{name}: {arg.names}"  # only the option's own name, no extra letter
