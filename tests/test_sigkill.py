"""``kill -9`` at a series of instants of a real root key ceremony: the outcome is complete or empty.

A driver runs ``invoke ceremony.root`` as the operator does and kills its own process (SIGKILL:
nothing of Python runs afterwards) at one instant of the run: inside a step, after the key pair is
journalled but before it exists, after it exists, after each staged output, before and after the
seal, after the commit record, after the first output is linked into place, after the manifest is
written. What is left is then read as the next run reads it (``ceremony.common.outputs.recover``, run
first by every ceremony): before the commit, no output file and no manifest entry, and the key
pair the run made (if it got that far) reported as an orphan with its token, label, CKA_ID and
SPKI SHA-256 exactly as the token holds it; from the commit on, every output in place with its
manifest entry and the transcript's seal over them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_transcript_interrupt import answers

from ceremony.common.manifest import Manifest
from ceremony.common.outputs import leftover_runs, recover
from ceremony.definition.model import load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.hsm.signers import public_key_from_token

pytestmark = pytest.mark.hsm

DRIVER = """
import contextlib, os, signal, sys
from ceremony.ceremonies import runner
from ceremony.common import outputs
from ceremony.common.manifest import Manifest
from ceremony.transcript import chain as transcript

kind, _, arg = os.environ.get("KILL_AT", "").partition(":")
counts = {"stage": 0, "link": 0}


def die(): os.kill(os.getpid(), signal.SIGKILL)


_step = transcript.TranscriptRecorder.step
@contextlib.contextmanager
def step(self, step_id, description):
    with _step(self, step_id, description):
        if kind == "step" and step_id == arg: die()
        yield
transcript.TranscriptRecorder.step = step

_creating, _created, _stage = runner.CeremonyRun.creating, runner.CeremonyRun.created, runner.CeremonyRun.stage
def creating(self, *a):
    obj = _creating(self, *a)
    if kind == "journalled": die()
    return obj
def created(self, *a):
    _created(self, *a)
    if kind == "created": die()
def stage(self, *a):
    path = _stage(self, *a)
    counts["stage"] += 1
    if kind == "stage" and counts["stage"] == int(arg): die()
    return path
runner.CeremonyRun.creating, runner.CeremonyRun.created, runner.CeremonyRun.stage = creating, created, stage

_seal = transcript.TranscriptRecorder.seal
def seal(self, *a):
    if kind == "before-seal": die()
    _seal(self, *a)
    if kind == "after-seal": die()
transcript.TranscriptRecorder.seal = seal

_write_json = outputs._write_json
def write_json(path, data):
    _write_json(path, data)
    if kind == "commit" and path.name == outputs.COMMIT: die()
outputs._write_json = write_json

_link = os.link
def link(src, dst, **k):
    _link(src, dst, **k)
    if outputs.STAGING_PREFIX in str(dst): return  # a staged file, not the publication
    counts["link"] += 1
    if kind == "link" and counts["link"] == int(arg): die()
os.link = link

_add = Manifest.add_entries
def add_entries(self, entries):
    _add(self, entries)
    if kind == "manifest": die()
Manifest.add_entries = add_entries

from invoke.main import program
program.run(["invoke", *sys.argv[1:]])
"""

OUTPUTS = ("root.crt.pem", "root.crt.der", "root.pub.pem", "root.pub.der", "root.seal.crt.pem", "root.seal.crt.der")
#: (instant, whether the outcome is complete, how many key pairs exist when the process dies: the root key is
#: generated first, then the transcript-sealing key; "created" strikes right after the first)
INSTANTS = [
    ("step:token-open", False, 0),
    ("journalled", False, 0),
    ("created", False, 1),
    ("step:certificate-sign", False, 2),
    ("stage:1", False, 2),
    ("stage:6", False, 2),
    ("before-seal", False, 2),
    ("after-seal", False, 2),
    ("commit", True, 2),
    ("link:1", True, 2),
    ("manifest", True, 2),
]


def token_keys(defn_path: Path) -> list[dict[str, str]]:
    """The key pairs on the root token: label, CKA_ID, SPKI SHA-256 (read from the token itself)."""
    hsm = load_definition(defn_path).model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        from pkcs11 import Attribute, ObjectClass

        return [{"label": str(o.label), "id_hex": bytes(o[Attribute.ID]).hex(),
                 "spki_sha256": spki_sha256(public_key_from_token(o))}
                for o in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})]


def destroy_all(defn_path: Path) -> None:
    hsm = load_definition(defn_path).model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        for obj in list(session.get_objects()):
            obj.destroy()


def test_every_instant_leaves_a_complete_or_an_empty_outcome(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, _ = definition_on_tokens()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    for n, (instant, complete, key_made) in enumerate(INSTANTS):
        out = tmp_path / f"out-{n}"
        env = {**os.environ, "KILL_AT": instant}
        proc = subprocess.run([sys.executable, str(driver), "ceremony.root", "--definition", str(defn), "--out",
                               str(out), "--rehearsal", "--answers", str(answers(tmp_path / "answers.yml"))],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == -signal.SIGKILL, (instant, proc.stdout[-2000:] + proc.stderr[-2000:])
        keys = token_keys(defn)
        assert len(keys) == key_made, (instant, keys)

        found = recover(out, Manifest(out, True))  # what the next run does first
        listed = {a["path"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]} \
            if (out / "manifest.json").exists() else set()
        present = {name for name in OUTPUTS if (out / name).exists()}
        if complete:
            assert present == set(OUTPUTS) and set(OUTPUTS) <= listed, (instant, present, listed)
            assert [f.committed for f in found] == [True], instant
            assert not leftover_runs(out)
            sealed = next((out / "transcripts").glob("*.jsonl")).read_text()
            assert '"type": "seal"' in sealed or '"type":"seal"' in sealed, instant
        else:
            assert present == set() and not listed & set(OUTPUTS), (instant, present, listed)
            if key_made:  # the orphan, exactly as the token holds it
                orphans = [vars(o) for f in found for o in f.orphans]
                assert len(orphans) == key_made, (instant, found)
                assert sorted(({k: o[k] for k in ("label", "id_hex", "spki_sha256")} for o in orphans),
                              key=lambda o: o["label"]) == sorted(keys, key=lambda o: o["label"]), instant
                for key in keys:
                    assert "--delete-object --type privkey --id " + key["id_hex"] in " ".join(
                        line for f in found for line in f.lines())
        destroy_all(defn)  # the next instant starts from an empty token again
