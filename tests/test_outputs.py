"""The output set (``ceremony.common.outputs``) on its own: the file half of every writer's transaction.

The ceremonies' runner adds the tokens and the seal on top of it (``tests/test_fault_injection.py``,
``tests/test_sigkill.py``); here the writers without a token (CP/CPS, reports, paper scripts) are
what is exercised: all or nothing, nothing overwritten, a half-done publication rolled forward.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ceremony.common.errors import OutputError
from ceremony.common.manifest import Manifest
from ceremony.common.outputs import COMMIT, STAGING_PREFIX, OutputSet, inspect_leftovers, leftover_runs


def listing(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


def test_outputs_are_published_with_their_manifest_entries_in_one_step(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path, rehearsal=True)
    with OutputSet(tmp_path, manifest, "writer") as outputs:
        outputs.plan("a.txt", "note", "text", lang="fr")
        outputs.plan("sub/b.txt", "note", "text")
        outputs.check()
        outputs.stage("a.txt", b"alpha")
        outputs.stage("sub/b.txt", b"beta")
        assert not (tmp_path / "a.txt").exists() and listing(tmp_path)[0].startswith(STAGING_PREFIX)
        outputs.commit()
    assert (tmp_path / "a.txt").read_bytes() == b"alpha" and (tmp_path / "sub/b.txt").read_bytes() == b"beta"
    assert leftover_runs(tmp_path) == []
    listed = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    assert [(a["path"], a["kind"], a.get("lang")) for a in listed] == [("a.txt", "note", "fr"),
                                                                       ("sub/b.txt", "note", None)]


def test_a_failure_before_the_commit_leaves_nothing(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path, rehearsal=True)
    with pytest.raises(RuntimeError, match="renderer broke"), OutputSet(tmp_path, manifest, "writer") as outputs:
        outputs.plan("a.txt", "note", "text")
        outputs.stage("a.txt", b"alpha")
        raise RuntimeError("renderer broke")
    assert listing(tmp_path) == [] and not (tmp_path / "manifest.json").exists()


def test_a_writer_that_returns_without_committing_publishes_nothing_and_says_so(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="nothing was published"), OutputSet(tmp_path, None, "writer") as outputs:
        outputs.plan("a.txt", "note", "text")
        outputs.stage("a.txt", b"alpha")
    assert listing(tmp_path) == []


def test_an_existing_output_is_refused_before_anything_is_staged(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"the auditor's copy")
    with pytest.raises(OutputError, match=r"a\.txt: output file exists already"), \
            OutputSet(tmp_path, None, "writer") as outputs:
        outputs.plan("a.txt", "note", "text")
        outputs.check()
    assert listing(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_bytes() == b"the auditor's copy"


def test_an_unplanned_or_twice_staged_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="not a planned output"), OutputSet(tmp_path, None, "writer") as outputs:
        outputs.stage("surprise.txt", b"x")
    with pytest.raises(OutputError, match="staged twice"), OutputSet(tmp_path, None, "writer") as outputs:
        outputs.plan("a.txt", "note", "text")
        outputs.stage("a.txt", b"1")
        outputs.stage("a.txt", b"2")
    assert listing(tmp_path) == []


def test_a_committed_but_unpublished_run_is_rolled_forward_by_the_next_writer(tmp_path: Path) -> None:
    """The state ``kill -9`` leaves between ``publish.json`` and the links: the next writer publishes it."""
    manifest = Manifest(tmp_path, rehearsal=True)
    outputs = OutputSet(tmp_path, manifest, "writer").__enter__()
    outputs.plan("a.txt", "note", "text")
    staged = outputs.stage("a.txt", b"alpha")
    # what commit() writes first, then the process dies before linking anything
    entries = [{"kind": "note", "file": "a.txt", "path": "a.txt", "sha256": outputs_sha(staged), "format": "text",
                "staged": True, "replace": False}]
    (staged.parent / COMMIT).write_text(json.dumps({"ceremony": "writer", "entries": entries}))
    assert [(left.committed, left.orphans) for left in inspect_leftovers(tmp_path)] == [(True, [])]
    assert not (tmp_path / "a.txt").exists()

    with OutputSet(tmp_path, Manifest(tmp_path, rehearsal=True), "next") as following:
        assert [left.published for left in following.leftovers] == [["a.txt"]]
    assert (tmp_path / "a.txt").read_bytes() == b"alpha" and leftover_runs(tmp_path) == []
    assert [a["path"] for a in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]] == ["a.txt"]


def outputs_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
