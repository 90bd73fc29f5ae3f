"""Every ceremony, failed at every step in turn: afterwards nothing but its transcript exists.

The ceremony runner (``ceremony.ceremonies.runner``) promises all or nothing. Here each ceremony of the CA
runs on real SoftHSM tokens with its real transcript, and is broken once per run:

- an exception at the start of each scripted step, and at its end (after the step's work is done);
- a simulated HSM error (a PKCS#11 ``DeviceError``) at the start of each step;
- Ctrl-C at each prompt the room answers (bag serials, witness confirmations, sign-out), the
  bag-reseal prompts included;
- a failure of the seal itself (the HSM refuses to sign the chain head).

After each: no output file, no manifest entry, no staging directory, no new object on any token,
and the transcript verifies as ``failed`` or ``interrupted`` (never ``intact``). The one state a
failed run keeps is the root CRL batch's reservation of its CRL numbers, by design. The prompts are
counted in an unbroken run first, so a prompt the script adds later is covered without editing
this file. Each ceremony's prerequisites (the root certificate, the CSR) are made once and
copied into a fresh output directory for every run.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import tree
from pkcs11 import exceptions as p11e

from ceremony.ceremonies.backup import backup_ceremony
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.ceremonies.root_crl import root_crl_batch_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.display import make_console
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.transcript import chain as transcript
from ceremony.transcript.audit import verify
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.transcript.scriptbook import load_script

pytestmark = pytest.mark.hsm
CA = "qualified"


class Injected(RuntimeError):
    """The fault this test raises (distinct from anything the engine raises itself)."""


Run = Callable[[LoadedDefinition, Path, Any], object]

CEREMONIES: dict[str, Run] = {
    "root-key-generation": lambda d, out, rec: root_ceremony(d, out, rec, rehearsal=True, interactive=False),
    "subordinate-key-generation": lambda d, out, rec: subordinate_key_ceremony(d, CA, out, rec, rehearsal=True,
                                                                               interactive=False),
    "subordinate-signing": lambda d, out, rec: sign_subordinate_ceremony(d, CA, out / f"{CA}.csr.pem", out, rec,
                                                                         rehearsal=True, interactive=False),
    "root-crl-batch": lambda d, out, rec: root_crl_batch_ceremony(d, out, rec, rehearsal=True, interactive=False,
                                                                  count=2),
    "key-backup": lambda d, out, rec: backup_ceremony(d, "root", out, rec, rehearsal=True, interactive=False),
    "key-restore": lambda d, out, rec: restore_ceremony(
        d, "root", out / "backup" / "root.key-backup.json", sorted((out / "backup").glob("root.share-*"))[:2], out,
        rec, rehearsal=True, certificate=out / "root.crt.pem", target=TARGETS[str(d.path)], interactive=False),
}

#: The token a restore writes to, per definition (made by the ``made`` fixture).
TARGETS: dict[str, Hsm] = {}

#: What each ceremony needs in its output directory before it starts.
PREREQUISITES: dict[str, tuple[str, ...]] = {
    "root-key-generation": (),
    "subordinate-key-generation": (),
    "subordinate-signing": ("root-key-generation", "subordinate-key-generation"),
    "root-crl-batch": ("root-key-generation",),
    "key-backup": ("root-key-generation",),
    "key-restore": ("root-key-generation", "key-backup"),
}


@dataclass(frozen=True)
class Fault:
    kind: str  # step-start, step-end, hsm-error, prompt, seal
    where: str | int = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


@contextlib.contextmanager
def injected(monkeypatch: pytest.MonkeyPatch, fault: Fault | None) -> Iterator[list[str]]:
    """Arm ``fault`` in the transcript recorder (or only count the prompts, for None)."""
    prompts: list[str] = []
    with monkeypatch.context() as m:
        real_step = transcript.TranscriptRecorder.step

        @contextlib.contextmanager
        def step(self: Any, step_id: str, description: str) -> Iterator[None]:
            with real_step(self, step_id, description):
                if fault is not None and fault.where == step_id and fault.kind == "step-start":
                    raise Injected(f"injected at the start of {step_id}")
                if fault is not None and fault.where == step_id and fault.kind == "hsm-error":
                    raise p11e.DeviceError()
                yield
                if fault is not None and fault.where == step_id and fault.kind == "step-end":
                    raise Injected(f"injected at the end of {step_id}")

        m.setattr(transcript.TranscriptRecorder, "step", step)

        def prompt(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            def answer(self: Any, *args: Any) -> Any:
                prompts.append(f"{name}{args[1:] if name == 'bag_serial' else ''}")
                if fault is not None and fault.kind == "prompt" and fault.where == len(prompts) - 1:
                    raise KeyboardInterrupt
                return real(self, *args)
            return answer

        for name in ("bag_serial", "confirm"):
            m.setattr(transcript.RehearsalAnswers, name, prompt(name, getattr(transcript.RehearsalAnswers, name)))
        if fault is not None and fault.kind == "seal":
            def refuse(key: Any, message: bytes) -> tuple[str, bytes]:
                raise p11e.DeviceError()
            m.setattr(transcript, "_sign", refuse)
        yield prompts


def token_objects(defn: LoadedDefinition) -> dict[str, set[tuple[str, str]]]:
    """Every object on every token of the definition (and on the restore's target), as the CO sees them."""
    hsms = {name: ca.hsm for name, ca in defn.model.cas.items()}
    if str(defn.path) in TARGETS:
        hsms["restore target"] = TARGETS[str(defn.path)]
    found = {}
    for name, hsm in hsms.items():
        with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
            found[name] = {(str(o.label), type(o).__name__) for o in session.get_objects()}
    return found


def run_once(defn: LoadedDefinition, name: str, out: Path) -> Path:
    """One run of ceremony ``name`` with its transcript in ``out/transcripts``; returns the transcript."""
    with transcript.open_transcript(out / "transcripts", name, defn, rehearsal=True, console=quiet()) as rec:
        CEREMONIES[name](defn, out, rec)
    return rec.path


@pytest.fixture
def made(tmp_path: Path, definition_on_tokens: Any,
         make_token: Any) -> Callable[[str, str], tuple[LoadedDefinition, Path]]:
    """Fresh tokens and a directory holding a ceremony's prerequisites, made with them."""

    def _make(name: str, tag: str) -> tuple[LoadedDefinition, Path]:
        path, _ = definition_on_tokens(name=f"{tag}.yml")
        defn = load_definition(path)
        target = make_token(f"target-{tag}")
        TARGETS[str(defn.path)] = Hsm(module=target.module, token=TokenRef(label=target.label),
                                      key_label=defn.model.cas["root"].hsm.key_label, pin_env=target.pin_env,
                                      so_pin_env=target.so_pin_env)
        base = tmp_path / tag
        base.mkdir()
        for before in PREREQUISITES[name]:
            CEREMONIES[before](defn, base, ConsoleRecorder(rehearsal=True, console=quiet()))
        return defn, base

    return _make


def quiet() -> Any:
    return make_console(file=open("/dev/null", "w"))


@pytest.mark.parametrize("name", sorted(CEREMONIES))
def test_every_fault_leaves_nothing_but_the_transcript(name: str, made: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [s.id for act in load_script(name).acts for s in act.steps]
    # An unbroken run first, on tokens of its own, counting the prompts the room answers.
    clean_defn, clean = made(name, "clean")
    with injected(monkeypatch, None) as prompts:
        sealed = run_once(clean_defn, name, clean)
    assert verify(sealed).status == "intact"
    assert any("reseal" in p for p in prompts), prompts  # the bag-reseal prompts are among them

    # Then every fault, each on a fresh copy of the prerequisites and the same tokens: since no fault may
    # leave anything on them, every run starts from the state the first one found.
    defn, base = made(name, "faults")
    objects = token_objects(defn)
    before = tree(base)
    manifest = (base / "manifest.json").read_bytes() if (base / "manifest.json").exists() else None
    faults = ([Fault(kind, step) for step in steps for kind in ("step-start", "step-end", "hsm-error")]
              + [Fault("prompt", i) for i in range(len(prompts))] + [Fault("seal")])
    for n, fault in enumerate(faults):
        out = tmp_path / f"run-{n}"
        shutil.copytree(base, out)
        with injected(monkeypatch, fault), pytest.raises((Exception, KeyboardInterrupt)):
            run_once(defn, name, out)
        # The CRL numbers a batch reserves before its first signature stay reserved (docs/crl.md, "Crash
        # safety of the CRL number": a number that may have been signed is never used for another CRL).
        left = {f for f in tree(out) - before if not (name == "root-crl-batch" and f.startswith(".state/"))}
        transcripts = [f for f in left if f.startswith("transcripts/")]
        assert left == set(transcripts) and len(transcripts) == 1, (str(fault), sorted(left))
        now = (out / "manifest.json").read_bytes() if (out / "manifest.json").exists() else None
        assert now == manifest, str(fault)
        audit = verify(out / transcripts[0])
        assert audit.status in ("failed", "interrupted"), (str(fault), audit.status, [str(p) for p in audit.problems])
        assert token_objects(defn) == objects, str(fault)
    print(f"{name}: {len(faults)} faults injected ({len(steps)} steps, {len(prompts)} prompts, the seal)")
