"""The split-PIN change ceremony on real SoftHSM tokens (issue 18): the officers a token's record names enter their
current parts, then new ones; afterwards the old parts fail at the token and the new ones open it; the record lists
the change; the transcript names who entered a part, never a part, and verifies. Bad input (new parts making the same
PIN, wrong current parts, a token whose PIN is not split) leaves the token as it was.
"""

from __future__ import annotations

import copy
import io
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
from conftest import REPO, SOFTHSM_CONF, base_definition_data, tree, write_definition
from pkcs11 import exceptions as p11e

from ceremony.ceremonies.pin_change import new_parts_variable, pin_change_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.token_init import token_init_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import PinError, RequestError
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.hsm import pins, softhsm
from ceremony.hsm.session import (
    PinRejectedError,
    load_module,
    open_session,
    pin_source_for,
    read_token_record,
    rescan,
    tokens_labelled,
)
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.participants import REHEARSAL_OFFICERS, REHEARSAL_PEOPLE, REHEARSAL_SECURITY_OFFICERS

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("pin-change")]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
CO = [f"{name} (rehearsal)" for name in REHEARSAL_OFFICERS[:2]]
SO = [f"{REHEARSAL_PEOPLE['security-officer']} (rehearsal)", f"{REHEARSAL_SECURITY_OFFICERS[0]} (rehearsal)"]


@dataclass
class Setup:
    defn: LoadedDefinition
    label: str
    user_env: str
    parts: list[str]
    out: Path
    so_env: str
    so_parts: list[str]


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def part() -> str:
    return secrets.token_urlsafe(12)


def recorded(defn: LoadedDefinition, script: str, out: Path) -> Any:
    return transcript.open_transcript(out / "transcripts", script, defn, rehearsal=True, console=quiet())


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """The root token initialised at its ceremony with a user PIN split between two Crypto Officers and an SO PIN
    between two HSM Security Officers, then the root key ceremony on it, which certifies the token's sealing key."""
    suffix = secrets.token_hex(4)
    label = f"t-pin-{suffix}"
    user_env, so_env = f"TEST_PC_PIN_{suffix.upper()}", f"TEST_PC_SO_PIN_{suffix.upper()}"
    data = copy.deepcopy(base_definition_data())
    data["ceremony"]["security_officer_quorum"] = 2
    data["cas"]["root"]["hsm"].update(module=softhsm.softhsm_module(), token={"label": label}, pin_env=user_env,
                                      so_pin_env=so_env)
    data["cas"]["root"]["backup"] = {"mode": "none"}
    defn = load_definition(write_definition(tmp_path / "pki.yml", data))
    parts, so_parts = [part(), part()], [part(), part()]
    pins.hold_parts(user_env, list(zip(CO, parts, strict=True)))
    pins.hold_parts(so_env, list(zip(SO, so_parts, strict=True)))
    out = tmp_path / "out"
    with recorded(defn, "token-initialisation", out) as rec:
        token_init_ceremony(defn, "root", out, rec, rehearsal=True, interactive=False)
    with recorded(defn, "root-key-generation", out) as rec:
        root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    yield Setup(defn, label, user_env, parts, out, so_env, so_parts)
    for name in (user_env, so_env):
        pins.release_parts(name)
        pins.release_parts(new_parts_variable(name))


def token(label: str) -> Any:
    found = tokens_labelled(load_module(softhsm.softhsm_module()), label)
    assert len(found) == 1
    return found[0]


def opens_with(s: Setup, parts: list[str]) -> bool:
    """Whether the engine opens the token with these parts of the recorded officers (a refusal uses one try)."""
    hsm = s.defn.model.cas["root"].hsm
    pins.hold_parts(s.user_env, list(zip(CO, parts, strict=True)))
    try:
        with open_session(hsm, pin_source_for(hsm, interactive=False)):
            return True
    except PinRejectedError:
        return False


def change(s: Setup, new: list[str], current: list[str] | None = None) -> Any:
    pins.hold_parts(s.user_env, list(zip(CO, current or s.parts, strict=True)))
    pins.hold_parts(new_parts_variable(s.user_env), list(zip(CO, new, strict=True)))
    with recorded(s.defn, "pin-change", s.out) as rec:
        result = pin_change_ceremony(s.defn, "root", s.out, rec, rehearsal=True, interactive=False)
    return result, rec.path


def test_after_the_change_the_old_parts_fail_and_the_new_ones_open_the_token(setup: Setup) -> None:
    new = [part(), part()]
    result, path = change(setup, new)
    assert result.officers == tuple(CO) and result.token == setup.label
    # at the token itself: the PIN of the old parts is refused, the PIN of the new parts accepted
    with pytest.raises(p11e.PinIncorrect):
        token(setup.label).open(user_pin=pins.combine_parts(setup.parts, setup.label, "user"))
    with token(setup.label).open(user_pin=pins.combine_parts(new, setup.label, "user")):
        pass
    # through the engine, as every later ceremony logs in
    assert not opens_with(setup, setup.parts)
    assert opens_with(setup, new)
    record = read_token_record(token(setup.label))
    assert record is not None and record["user"]["officers"] == CO
    assert [(c["pin"], c["by"]) for c in record["pin_changes"]] == [("user", CO)]
    assert result.report.is_file()
    assert verify(path, setup.out, trust=load_anchor(str(setup.out / "root.crt.pem"), setup.out),
                  rehearsal=True).exit_code == 0
    secret = [*setup.parts, *new, pins.combine_parts(setup.parts, setup.label, "user"),
              pins.combine_parts(new, setup.label, "user")]
    every = path.read_text(encoding="utf-8") + result.report.read_text(encoding="utf-8")
    assert not [s for s in secret if s in every]
    # a second change, through the task, with the parts as an operator's variables give them
    newer = [part(), part()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")} | {"SOFTHSM2_CONF": str(SOFTHSM_CONF)}
    env |= {pins.part_variable(setup.user_env, n): v for n, v in enumerate(new, start=1)}
    env |= {pins.part_variable(new_parts_variable(setup.user_env), n): v for n, v in enumerate(newer, start=1)}
    done = subprocess.run([INVOKE, "ceremony.change-pin", "--ca", "root", "--definition", str(setup.defn.path),
                           "--out", str(setup.out), "--rehearsal"], cwd=REPO, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not [s for s in [*new, *newer] if s in done.stdout + done.stderr]
    rescan(softhsm.softhsm_module())  # SoftHSM reads what another process changed at C_Initialize
    assert not opens_with(setup, new) and opens_with(setup, newer)
    record = read_token_record(token(setup.label))
    assert record is not None and len(record["pin_changes"]) == 2


def test_the_security_officers_change_their_parts_of_the_so_pin(setup: Setup) -> None:
    """The SO PIN's parts change; the user PIN (the Crypto Officers' parts) is untouched and opens the session that
    seals the transcript."""
    new = [part(), part()]
    pins.hold_parts(setup.so_env, list(zip(SO, setup.so_parts, strict=True)))
    pins.hold_parts(new_parts_variable(setup.so_env), list(zip(SO, new, strict=True)))
    pins.hold_parts(setup.user_env, list(zip(CO, setup.parts, strict=True)))
    with recorded(setup.defn, "pin-change", setup.out) as rec:
        result = pin_change_ceremony(setup.defn, "root", setup.out, rec, rehearsal=True, interactive=False, pin="so")
    assert result.pin == "so" and result.officers == tuple(SO)
    with pytest.raises(p11e.PinIncorrect):
        token(setup.label).open(rw=True, so_pin=pins.combine_parts(setup.so_parts, setup.label, "so"))
    with token(setup.label).open(rw=True, so_pin=pins.combine_parts(new, setup.label, "so")):
        pass
    assert opens_with(setup, setup.parts)
    record = read_token_record(token(setup.label))
    assert record is not None and [(c["pin"], c["by"]) for c in record["pin_changes"]] == [("so", SO)]
    assert verify(rec.path, setup.out, trust=load_anchor(str(setup.out / "root.crt.pem"), setup.out),
                  rehearsal=True).exit_code == 0


def test_bad_parts_leave_the_token_as_it_was(setup: Setup, tmp_path: Path) -> None:
    before = tree(setup.out)
    record = read_token_record(token(setup.label))
    # new parts that make the same PIN: refused before the token is touched
    with pytest.raises(PinError, match="same PIN as the current ones"):
        change(setup, list(setup.parts))
    # a new part shorter than 8 characters
    with pytest.raises(PinError, match="shorter than 8"):
        change(setup, [part(), "short"])
    # wrong current parts: the token refuses them at login, nothing changed
    with pytest.raises(PinRejectedError, match="current parts"):
        change(setup, [part(), part()], current=[part(), part()])
    assert opens_with(setup, setup.parts)
    assert read_token_record(token(setup.label)) == record
    assert {p for p in tree(setup.out) if not p.startswith("transcripts/")} == \
        {p for p in before if not p.startswith("transcripts/")}
    # a token whose PIN is not split
    single = copy.deepcopy(base_definition_data())
    label = f"t-pin1-{secrets.token_hex(4)}"
    softhsm.init_token(SOFTHSM_CONF, label, softhsm.random_pin(), softhsm.random_pin())
    single["cas"]["root"]["hsm"].update(module=softhsm.softhsm_module(), token={"label": label})
    defn = load_definition(write_definition(tmp_path / "single.yml", single))
    with recorded(defn, "pin-change", tmp_path / "single") as rec, \
            pytest.raises(RequestError, match="user PIN is not split"):
        pin_change_ceremony(defn, "root", tmp_path / "single", rec, rehearsal=True, interactive=False)


def test_the_officers_type_current_and_new_parts_unseen_at_a_terminal(setup: Setup) -> None:
    """``invoke ceremony.change-pin`` under a pseudo-terminal as the officers use it: each types their current part,
    then a new part twice, none echoed; afterwards the token opens with the new parts only."""
    for name in (setup.user_env, setup.so_env):
        pins.release_parts(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "TEST_PC_"))}
    env |= {"SOFTHSM2_CONF": str(SOFTHSM_CONF), "LANG": "C.UTF-8", "COLUMNS": "200"}
    new = [part(), part()]
    child = pexpect.spawn(INVOKE, ["ceremony.change-pin", "--definition", str(setup.defn.path), "--ca", "root",
                                   "--out", str(setup.out), "--rehearsal"], cwd=str(REPO), env=env, encoding="utf-8",
                          timeout=120)
    child.logfile_read = seen = io.StringIO()  # everything the terminal showed
    for name, value in zip(CO, setup.parts, strict=True):
        child.expect(f"part of {re.escape(name)} \\(Crypto Officer\\), not shown: ")
        child.sendline(value)
    for name, value in zip(CO, new, strict=True):
        child.expect(f"part of {re.escape(name)} \\(Crypto Officer\\), not shown: ")
        child.sendline(value)
        child.expect(f"the same part again, {re.escape(name)}: ")
        child.sendline(value)
    child.expect(pexpect.EOF)
    child.close()
    screen = seen.getvalue()
    assert child.exitstatus == 0, screen[-3000:]
    assert "user PIN changed" in screen
    assert not [s for s in [*setup.parts, *new] if s in screen]
    rescan(softhsm.softhsm_module())
    assert not opens_with(setup, setup.parts) and opens_with(setup, new)
