"""The token initialisation ceremony on real SoftHSM tokens: split knowledge of the PINs (issue 18).

A token initialised with quorums of two cannot be activated by one Crypto Officer: the token refuses a login with
one officer's part (or the PIN derived from it alone) and accepts the PIN combined from both. The transcript records
who entered a part, never a part, verifies, and is anchored once the root key ceremony held on that token certifies
the sealing key the token was born with. Bad input (a part entered twice by one officer, a part from someone not
signed in as Crypto Officer, too few parts, a label already initialised) gets one message and leaves the token and
the output directory unchanged.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from conftest import REPO, SOFTHSM_CONF, base_definition_data, tree, write_definition
from pkcs11 import Attribute
from pkcs11 import exceptions as p11e

from ceremony.ceremonies import token_init
from ceremony.ceremonies.preflight import PreflightError, run_preflight
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.ceremonies.token_init import find_target, token_init_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import CeremonyError, HsmError, PinError, RequestError
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.hsm import pins, softhsm
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import (
    PinRejectedError,
    blank_slots,
    load_module,
    open_session,
    pin_source_for,
    read_token_record,
    rescan,
    tokens_labelled,
)
from ceremony.transcript import chain as transcript
from ceremony.transcript.participants import REHEARSAL_OFFICERS, REHEARSAL_PEOPLE, REHEARSAL_SECURITY_OFFICERS
from ceremony.x509.csr import load_csr
from ceremony.x509.files import read_public_key

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("token-init")]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
CO = [f"{name} (rehearsal)" for name in REHEARSAL_OFFICERS[:2]]
SO = [f"{REHEARSAL_PEOPLE['security-officer']} (rehearsal)", f"{REHEARSAL_SECURITY_OFFICERS[0]} (rehearsal)"]


@dataclass
class Setup:
    defn: LoadedDefinition
    label: str
    user_env: str
    so_env: str
    user_parts: list[str]
    so_parts: list[str]


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def part() -> str:
    return secrets.token_urlsafe(12)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A definition whose root token does not exist yet (a fresh label), quorums of 2 Crypto Officers and 2 Security
    Officers, and the four officers' parts generated now, handed to the engine as a caller does (never exported)."""
    suffix = secrets.token_hex(4)
    label = f"t-init-{suffix}"
    user_env, so_env = f"TEST_INIT_PIN_{suffix.upper()}", f"TEST_INIT_SO_PIN_{suffix.upper()}"
    data = copy.deepcopy(base_definition_data())
    data["ceremony"]["security_officer_quorum"] = 2
    data["cas"]["root"]["hsm"].update(module=softhsm.softhsm_module(), token={"label": label}, pin_env=user_env,
                                      so_pin_env=so_env)
    data["cas"]["root"]["backup"] = {"mode": "none"}
    data["cas"]["qualified"]["hsm"].update(module=softhsm.softhsm_module(), token={"label": f"t-init-q-{suffix}"},
                                           pin_env=user_env, so_pin_env=so_env,  # the same officers' parts
                                           split_user_pin=True)  # activated only at ceremonies (the default: whole)
    data["cas"]["qualified"]["backup"] = {"mode": "none"}
    defn = load_definition(write_definition(tmp_path / "pki.yml", data))
    s = Setup(defn, label, user_env, so_env, [part(), part()], [part(), part()])
    pins.hold_parts(user_env, list(zip(CO, s.user_parts, strict=True)))
    pins.hold_parts(so_env, list(zip(SO, s.so_parts, strict=True)))
    yield s
    pins.release_parts(user_env)
    pins.release_parts(so_env)


def initialise(s: Setup, out: Path, ca: str = "root", **options: Any) -> Any:
    with transcript.open_transcript(out / "transcripts", "token-initialisation", s.defn, rehearsal=True,
                                    console=quiet()) as rec:
        result = token_init_ceremony(s.defn, ca, out, rec, rehearsal=True, interactive=False, **options)
    return result, rec.path


def token_of(label: str, scan: bool = False) -> Any:
    if scan:  # a token another process initialised: SoftHSM reads its token directory at C_Initialize
        rescan(softhsm.softhsm_module())
    lib = load_module(softhsm.softhsm_module())
    found = tokens_labelled(lib, label)
    assert len(found) == 1
    return found[0]


def test_one_crypto_officer_alone_cannot_activate_the_token(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result, path = initialise(setup, out)
    assert result.user_officers == tuple(CO) and result.so_officers == tuple(SO)
    token = token_of(setup.label)
    # The SO PIN is the one combined from the Security Officers' parts (SO login first: a failed user login below
    # may leave a read-only session that a Security Officer's login refuses).
    with token.open(rw=True, so_pin=pins.combine_parts(setup.so_parts, setup.label, "so")):
        pass
    # At the token: one officer's part, or the PIN one officer could derive alone, is refused ...
    for alone in (setup.user_parts[0], pins.combine_parts(setup.user_parts[:1], setup.label, "user"),
                  pins.combine_parts(setup.user_parts[1:], setup.label, "user")):
        with pytest.raises(p11e.PinIncorrect):
            token.open(user_pin=alone)
    # ... the PIN combined from both parts opens it.
    with token.open(user_pin=pins.combine_parts(setup.user_parts, setup.label, "user")):
        pass
    # The engine asks the token's recorded officers: with one officer's part only, it refuses before the login.
    hsm = setup.defn.model.cas["root"].hsm
    pins.hold_parts(setup.user_env, [(CO[0], setup.user_parts[0])])
    with pytest.raises(PinError, match="needs 2 parts, one from each of 2 distinct Crypto Officers; 1 entered"), \
            open_session(hsm, pin_source_for(hsm, interactive=False)):
        pass
    pins.hold_parts(setup.user_env, [(CO[0], setup.user_parts[0]), (CO[1], part())])
    with pytest.raises(PinRejectedError, match="combined from the parts of"), \
            open_session(hsm, pin_source_for(hsm, interactive=False)):
        pass
    pins.hold_parts(setup.user_env, list(zip(CO, setup.user_parts, strict=True)))
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        assert session.token.label.strip() == setup.label
    record = read_token_record(token)
    assert record is not None and record["user"]["officers"] == CO and record["so"]["officers"] == SO
    # The transcript says who entered a part, never a part or a PIN.
    text = path.read_text(encoding="utf-8")
    assert not [s for s in secrets_of(setup) if s in text]
    assert '"entered_by":' in text.replace(" ", "") and all(name in text for name in CO + SO)


def secrets_of(setup: Setup) -> list[str]:
    """The parts and the PINs they make: none may appear in a transcript, an output or a message."""
    return [*setup.user_parts, *setup.so_parts, pins.combine_parts(setup.user_parts, setup.label, "user"),
            pins.combine_parts(setup.so_parts, setup.label, "so")]


def state(label: str, out: Path) -> tuple[int, int, set[str]]:
    rescan(softhsm.softhsm_module())
    lib = load_module(softhsm.softhsm_module())
    return len(tokens_labelled(lib, label)), len(blank_slots(lib)), {p for p in tree(out) if "transcripts" not in p}


@pytest.mark.parametrize(("entries", "message"), [
    (lambda u: [(CO[0], u[0]), (CO[0], u[1])], re.escape(f"{CO[0]!r} entered a part of the user PIN of token") +
     ".* twice: each of the 2 Crypto Officers enters one part"),
    (lambda u: [(CO[0], u[0]), (SO[0], u[1])],
     re.escape(f"{SO[0]!r} entered a part") + ".* but is not one of its Crypto Officers " +
     re.escape(f"(signed in as Crypto Officer: {CO[0]}")),
    (lambda u: [(CO[1], u[1])], re.escape(f"needs 2 parts, one from each of 2 distinct Crypto Officers; 1 entered (by "
                                          f"{CO[1]})")),
], ids=["same-officer-twice", "not-a-crypto-officer", "too-few-parts"])
def test_bad_pin_parts_leave_the_token_blank(setup: Setup, tmp_path: Path, entries: Any, message: str) -> None:
    out = tmp_path / "out"
    before = state(setup.label, out)
    pins.hold_parts(setup.user_env, entries(setup.user_parts))
    with pytest.raises(PinError, match=message) as caught:
        initialise(setup, out)
    assert not [p for p in setup.user_parts + setup.so_parts if p in str(caught.value)]
    assert state(setup.label, out) == before == (0, before[1], set())


def test_an_initialised_label_is_refused_unless_reinitialised(setup: Setup, tmp_path: Path) -> None:
    first, _ = initialise(setup, tmp_path / "first")
    token = token_of(setup.label)
    user_pin = pins.combine_parts(setup.user_parts, setup.label, "user")
    with token.open(user_pin=user_pin) as session:
        objects = {str(o[Attribute.LABEL]) for o in session.get_objects()}
    assert {"root-2026-seal", "ceremony-token-record"} <= objects
    out = tmp_path / "second"
    with pytest.raises(RequestError, match=r"is already initialised .* destroys every object on it, the CA key and "
                                           r"the transcript-sealing key included") as caught:
        find_target(setup.defn, "root", None, reinitialise=False)
    assert "--reinitialise" in str(caught.value)
    with pytest.raises(CeremonyError, match="already initialised"):
        initialise(setup, out)
    with token_of(setup.label).open(user_pin=user_pin) as session:  # unchanged: same objects, same PIN
        assert {str(o[Attribute.LABEL]) for o in session.get_objects()} == objects
    assert {p for p in tree(out) if "transcripts" not in p} == set()
    # Re-initialised on purpose: the SO PIN stays (the same officers' parts), the objects are gone, new user parts.
    pins.hold_parts(setup.user_env, [(CO[0], part()), (CO[1], part())])
    second, path = initialise(setup, out, reinitialise=True)
    assert second.sealing_spki_sha256 != first.sealing_spki_sha256
    with pytest.raises(p11e.PinIncorrect):
        token_of(setup.label).open(user_pin=user_pin)
    assert '"reinitialised":true' in path.read_text(encoding="utf-8").replace(" ", "")


def test_the_tasks_initialise_the_token_then_hold_the_root_ceremony_on_it(setup: Setup, tmp_path: Path) -> None:
    """``invoke ceremony.init-token`` then ``invoke ceremony.root`` (pre-flight included) as an operator runs them;
    the parts come from ``NAME_PART_n`` variables (the n-th officer signed in). Neither the output nor a transcript
    shows a part or a PIN. The root ceremony takes the sealing key the token was born with, so its sealing
    certificate anchors the initialisation's transcript: audit.verify exits 0. A second initialisation is refused
    before the sign-in, with one message."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    env["SOFTHSM2_CONF"] = str(SOFTHSM_CONF)
    for var, values in ((setup.user_env, setup.user_parts), (setup.so_env, setup.so_parts)):
        env |= {pins.part_variable(var, n): value for n, value in enumerate(values, start=1)}
    out = tmp_path / "out"
    common = ["--definition", str(setup.defn.path), "--out", str(out), "--rehearsal"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=300)

    done = run("ceremony.init-token", "--ca", "root", *common)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"user PIN from the parts of {', '.join(CO)}" in done.stdout
    written = sorted((out / "transcripts").glob("token-initialisation-*.jsonl"))
    assert len(written) == 1 and len(list((out / "tokens").glob(f"{setup.label}.*.token.json"))) == 1
    root = run("ceremony.root", *common)
    assert root.returncode == 0, root.stdout[-3000:] + root.stderr[-3000:]
    assert "born with the token at its initialisation" in root.stdout  # the pre-flight's finding
    verified = run("audit.verify", str(written[0]), "--artifacts", str(out), "--trust", str(out / "root.crt.pem"),
                   "--rehearsal")
    assert verified.returncode == 0, verified.stdout[-3000:]
    root_transcript = next((out / "transcripts").glob("root-key-generation-*.jsonl")).read_text(encoding="utf-8")
    assert '"generated_at":"token-initialisation"' in root_transcript.replace(" ", "")
    every = done.stdout + done.stderr + root.stdout + root.stderr + written[0].read_text(encoding="utf-8") + \
        root_transcript + "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert not [s for s in secrets_of(setup) if s in every]
    again = run("ceremony.init-token", "--ca", "root", *common)
    assert again.returncode != 0 and "is already initialised" in again.stderr + again.stdout
    assert sorted((out / "transcripts").glob("token-initialisation-*.jsonl")) == written  # before the sign-in


def test_the_officers_type_their_parts_unseen_at_a_terminal(setup: Setup, tmp_path: Path) -> None:
    """The prompt path, under a pseudo-terminal as the officers use it: each names themselves, types their part
    twice, and the part is never echoed; the token then opens with the combined parts only."""
    pins.release_parts(setup.user_env)
    pins.release_parts(setup.so_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "TEST_INIT_"))}
    env |= {"SOFTHSM2_CONF": str(SOFTHSM_CONF), "LANG": "C.UTF-8", "COLUMNS": "200"}
    out = tmp_path / "out"
    child = pexpect.spawn(INVOKE, ["ceremony.init-token", "--definition", str(setup.defn.path), "--ca", "root",
                                   "--out", str(out), "--rehearsal"], cwd=str(REPO), env=env, encoding="utf-8",
                          timeout=120)
    child.logfile_read = seen = io.StringIO()  # everything the terminal showed
    for role, people, parts in (("HSM Security Officer", SO, setup.so_parts), ("Crypto Officer", CO, setup.user_parts)):
        for n, (name, value) in enumerate(zip(people, parts, strict=True), start=1):
            child.expect(f"{role} entering part {n} of 2 of the .* \\(name as signed in\\): ")
            child.sendline(name)
            child.expect("not shown: ")
            child.sendline(value)
            child.expect("the same part again")
            child.sendline(value)
    child.expect(pexpect.EOF)
    child.close()
    screen = seen.getvalue()
    assert "parts entered by" in screen
    assert child.exitstatus == 0, screen[-3000:]
    assert not [s for s in secrets_of(setup) if s in screen]
    with token_of(setup.label, scan=True).open(user_pin=pins.combine_parts(setup.user_parts, setup.label, "user")):
        pass


SAME = part()


def test_the_derivation_binds_every_part_its_order_and_the_token() -> None:
    """HKDF over length-prefixed parts: a split between parts moved, the order changed, another token's label, or a
    part missing each give another PIN; the PIN is 32 hexadecimal digits."""
    pin = pins.combine_parts(["ab", "c"], "tok", "user")
    assert len(pin) == 32 and int(pin, 16) >= 0
    others = {pins.combine_parts(["a", "bc"], "tok", "user"), pins.combine_parts(["c", "ab"], "tok", "user"),
              pins.combine_parts(["ab", "c"], "tok2", "user"), pins.combine_parts(["ab", "c"], "tok", "so"),
              pins.combine_parts(["ab"], "tok", "user")}
    assert pin not in others and len(others) == 5


@pytest.mark.parametrize(("entries", "message"), [
    ([(CO[0], "x7Q"), (CO[1], part())], "shorter than 8 characters"),
    ([(CO[0], SAME), (CO[1], SAME)], "entered the same part"),
    ([(CO[0], part()), (CO[1], part()), (SO[0], part())], "is not one of its"),
], ids=["short-part", "equal-parts", "extra-part-from-a-security-officer"])
def test_weak_or_extra_parts_are_refused_before_the_token(entries: list[tuple[str, str]], message: str) -> None:
    name = f"TEST_PARTS_{secrets.token_hex(4).upper()}"
    pins.hold_parts(name, entries)
    try:
        with pytest.raises(PinError, match=message) as caught:
            pins.split_pin(pins.SplitPin("user", "tok"), pins.PinSource(env=name, interactive=False), CO, 2)
    finally:
        pins.release_parts(name)
    assert not [p for _, p in entries if p in str(caught.value)]


def test_the_subordinate_key_ceremony_takes_the_sealing_key_born_with_its_token(setup: Setup, tmp_path: Path) -> None:
    """A subordinate's token initialised at a ceremony: its key ceremony logs in with the Crypto Officers' parts and
    writes the CSR of the sealing key the token was born with (the one that sealed the initialisation), which the
    signing ceremony then certifies; it generates no second sealing key."""
    out = tmp_path / "out"
    result, _ = initialise(setup, out, ca="qualified")
    with transcript.open_transcript(out / "transcripts", "subordinate-key-generation", setup.defn, rehearsal=True,
                                    console=quiet()) as rec:
        subordinate_key_ceremony(setup.defn, "qualified", out, rec, rehearsal=True, interactive=False)
    assert spki_sha256(read_public_key(out / "qualified.seal.pub.pem")) == result.sealing_spki_sha256
    assert spki_sha256(load_csr(out / "qualified.seal.csr.pem").public_key()) == result.sealing_spki_sha256
    text = rec.path.read_text(encoding="utf-8").replace(" ", "")
    assert '"generated_at":"token-initialisation"' in text and '"pin-parts"' in text


def test_a_failure_after_initialisation_undoes_what_the_run_created(setup: Setup, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """PKCS#11 cannot return a token to blank: a failure after C_InitToken leaves the token initialised (the
    transcript says so), destroys the sealing key the run generated and publishes nothing."""
    def fail(session: Any, record: Any) -> None:
        raise HsmError("injected failure while writing the token's record")

    monkeypatch.setattr(token_init, "write_token_record", fail)
    out = tmp_path / "out"
    with pytest.raises(HsmError, match="injected failure"):
        initialise(setup, out)
    with token_of(setup.label).open(user_pin=pins.combine_parts(setup.user_parts, setup.label, "user")) as session:
        assert [str(o[Attribute.LABEL]) for o in session.get_objects()] == []
    assert {p for p in tree(out) if "transcripts" not in p} == set()
    written = next((out / "transcripts").glob("token-initialisation-*.jsonl")).read_text(encoding="utf-8")
    assert '"token-initialised"' in written


def test_the_successor_roots_token_is_named_by_its_stem(setup: Setup, tmp_path: Path) -> None:
    """A successor root (root rollover) has no entry under ``cas``: its token is initialised as ``--ca <root>.g<n>``
    (the rehearsal's life-cycle stage does so); any other name is refused with the names allowed, nothing done."""
    data = copy.deepcopy(base_definition_data())
    root = data["cas"]["root"]
    root["hsm"].update(module=softhsm.softhsm_module(), token={"label": setup.label})
    root["successor"] = {"generation": 2, "subject": [{"C": "ML"}, {"CN": "SCSE Test Root CA 2026 G2"}],
                         "key": {"algorithm": "ecdsa", "curve": "P-384"},
                         "validity": {"not_before": "2026-06-01T00:00:00Z", "not_after": "2046-06-01T00:00:00Z"},
                         "hsm": {**root["hsm"], "token": {"label": setup.label + "-g2"}, "key_label": "root-g2"},
                         "cross_certificate": {"reverse": True}}
    defn = load_definition(write_definition(tmp_path / "successor.yml", data))
    target = find_target(defn, "root.g2", None, False)
    assert target.label == setup.label + "-g2" and target.existing is None
    run_preflight(defn, "token-initialisation", tmp_path / "out", rehearsal=True, ca="root.g2",
                  interactive=False).raise_if_failed()
    with pytest.raises(PreflightError, match=r"needs --ca NAME \(one of: root, qualified, root\.g2\)"):
        run_preflight(defn, "token-initialisation", tmp_path / "out", rehearsal=True, ca="root.g3", interactive=False)
    assert not (tmp_path / "out").exists()


def test_an_online_subordinate_gets_one_user_pin_whatever_the_quorum(setup: Setup, tmp_path: Path) -> None:
    """The definition's quorum of 2 Crypto Officers splits the root's user PIN, not an online subordinate's: its CRL
    and OCSP jobs open its token unattended with the PIN from the service's file. Without ``split_user_pin`` the
    subordinate's token gets the one PIN from its variable (the room is told why); the SO PIN stays split."""
    data = yaml.safe_load(setup.defn.path.read_text(encoding="utf-8"))
    del data["cas"]["qualified"]["hsm"]["split_user_pin"]
    data["cas"]["qualified"]["hsm"]["pin_env"] = whole_env = f"{setup.user_env}_WHOLE"
    defn = load_definition(write_definition(tmp_path / "online.yml", data))
    whole = softhsm.random_pin()
    pins.hold(whole_env, whole)
    try:
        shown = io.StringIO()
        out = tmp_path / "out"
        with transcript.open_transcript(out / "transcripts", "token-initialisation", defn, rehearsal=True,
                                        console=make_console(file=shown, width=200)) as rec:
            result = token_init_ceremony(defn, "qualified", out, rec, rehearsal=True, interactive=False)
    finally:
        pins.release(whole_env)
    assert result.user_officers == () and result.so_officers == tuple(SO)
    assert "is one PIN, not split" in shown.getvalue()
    token = token_of(f"t-init-q-{setup.label.removeprefix('t-init-')}")
    with token.open(user_pin=whole):
        pass
    with pytest.raises(p11e.PinIncorrect):
        token.open(user_pin=pins.combine_parts(setup.user_parts, token.label.strip(), "user"))
    lines = [json.loads(line) for line in Path(rec.path).read_text(encoding="utf-8").splitlines()]
    slot = next(r for r in lines if r.get("type") == "evidence" and r.get("name") == "slot")
    assert slot["data"]["user_pin_split"] is False
