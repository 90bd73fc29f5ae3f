"""The split-PIN change ceremony on real SoftHSM tokens (issue 18): the officers a token's record names enter their
current parts, then new ones; afterwards the old parts fail at the token and the new ones open it; the record lists
the change; the transcript names who entered a part, never a part, and verifies. Bad input (new parts making the same
PIN, wrong current parts, a token whose PIN is not split) leaves the token as it was.
"""

from __future__ import annotations

import copy
import datetime as dt
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
from pkcs11 import exceptions as p11e

from ceremony.ceremonies.pin_change import new_parts_variable, pin_change_ceremony
from ceremony.ceremonies.preflight import PreflightError, plan_for
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
from ceremony.rehearsal.lifecycle import successor_data, successor_token
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


# --- handing a part over to a new officer ------------------------------------------------------------------------

#: The Crypto Officer who receives a part: signed in (answers file) but holding none yet.
NEW = f"{REHEARSAL_OFFICERS[2]} (rehearsal)"


def sign_in_sheet(path: Path, officers: list[str], security_officers: list[str] | None = None) -> Path:
    """The sign-in typed in advance (docs/transcripts.md, "Answers from a file"): the rehearsal's people with
    ``officers`` as the Crypto Officers (and ``security_officers`` as the HSM Security Officers), so that a third one
    can sign in to receive a part."""
    admin, witness = (f"{REHEARSAL_PEOPLE[r]} (rehearsal)" for r in ("administrator", "internal-witness"))
    people = [{"name": admin, "roles": ["administrator"], "id_document": "REHEARSAL-ID-ADMIN",
               "id_checked_by": witness},
              {"name": witness, "roles": ["internal-witness"], "id_document": "REHEARSAL-ID-WITNESS",
               "id_checked_by": admin}]
    people += [{"name": name, "roles": ["crypto-officer"], "id_document": f"REHEARSAL-ID-CO-{n}",
                "id_checked_by": admin} for n, name in enumerate(officers, start=1)]
    people += [{"name": name, "roles": ["security-officer"], "id_document": f"REHEARSAL-ID-SO-{n}",
                "id_checked_by": admin} for n, name in enumerate(security_officers or [], start=1)]
    people.append({"name": f"{REHEARSAL_PEOPLE['independent-witness']} (rehearsal)", "roles": ["independent-witness"],
                   "id_document": "REHEARSAL-ID-AUDITOR", "id_checked_by": admin})
    data = {"participants": people, "confirm": True,
            "bags": {"open": {"hsm": "REHEARSAL-HSM-1", "workstation": "REHEARSAL-WS-1"},
                     "reseal": {"hsm": "REHEARSAL-HSM-2", "workstation": "REHEARSAL-WS-2"}}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def opens_as(s: Setup, officers: list[str], parts: list[str]) -> bool:
    """Whether the engine opens the token with these officers' parts (as a later ceremony asks for them)."""
    hsm = s.defn.model.cas["root"].hsm
    pins.hold_parts(s.user_env, list(zip(officers, parts, strict=True)))
    try:
        with open_session(hsm, pin_source_for(hsm, interactive=False)):
            return True
    except PinRejectedError:
        return False


def hand_over(s: Setup, answers: Path, new: list[str], old: str = CO[1], to: str = NEW,
              current: list[str] | None = None, officers: list[str] | None = None) -> Any:
    pins.hold_parts(s.user_env, list(zip(officers or CO, current or s.parts, strict=True)))
    pins.hold_parts(new_parts_variable(s.user_env), list(zip([CO[0], to], new, strict=True)))
    with transcript.open_transcript(s.out / "transcripts", "pin-change", s.defn, rehearsal=True, answers=answers,
                                    console=quiet()) as rec:
        result = pin_change_ceremony(s.defn, "root", s.out, rec, rehearsal=True, interactive=False,
                                     hand_over=(old, to))
    return result, rec.path


def test_a_part_is_handed_over_and_later_ceremonies_ask_the_new_officer(setup: Setup, tmp_path: Path) -> None:
    answers = sign_in_sheet(tmp_path / "answers.yml", [*CO, NEW])
    new = [part(), part()]
    result, path = hand_over(setup, answers, new)
    assert result.officers == (CO[0], NEW)
    record = read_token_record(token(setup.label))
    assert record is not None and record["user"]["officers"] == [CO[0], NEW]
    assert record["pin_changes"][-1]["handover"] == {"from": CO[1], "to": NEW, "position": 2}
    # the old officer is not asked any more: the record names the new one, and a part from the old is refused
    # before the token is tried; the old parts under the new names fail at the token; the new parts open it
    with pytest.raises(PinError, match=rf"{re.escape(repr(CO[1]))} entered a part of .* but is not one of its Crypto "
                                       rf"Officers \(the token's record names {re.escape(CO[0])}, {re.escape(NEW)}\)"):
        opens_as(setup, CO, new)
    assert not opens_as(setup, [CO[0], NEW], setup.parts)
    assert opens_as(setup, [CO[0], NEW], new)
    # the transcript says who handed over to whom and who entered which part, never a part, and verifies
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    evidence = {(e["name"], e["data"].get("stage")): e["data"] for e in lines if e.get("type") == "evidence"}
    assert evidence[("pin-handover", None)]["from"] == CO[1] and evidence[("pin-handover", None)]["to"] == NEW
    assert evidence[("pin-parts", "current")]["entered_by"] == CO
    assert evidence[("pin-parts", "new")]["entered_by"] == [CO[0], NEW]
    assert json.loads(result.report.read_text())["handover"] == {"from": CO[1], "to": NEW, "position": 2}
    assert verify(path, setup.out, trust=load_anchor(str(setup.out / "root.crt.pem"), setup.out),
                  rehearsal=True).exit_code == 0
    every = path.read_text(encoding="utf-8") + result.report.read_text(encoding="utf-8")
    assert not [s for s in [*setup.parts, *new] if s in every]
    # a later ceremony on the token (here the next PIN change) asks the new officer for their part
    newer = [part(), part()]
    pins.hold_parts(setup.user_env, list(zip([CO[0], NEW], new, strict=True)))
    pins.hold_parts(new_parts_variable(setup.user_env), list(zip([CO[0], NEW], newer, strict=True)))
    with transcript.open_transcript(setup.out / "transcripts", "pin-change", setup.defn, rehearsal=True,
                                    answers=answers, console=quiet()) as rec:
        # (a later second than the handover's: the report's name carries the time to the second)
        later = pin_change_ceremony(setup.defn, "root", setup.out, rec, rehearsal=True, interactive=False,
                                    now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    assert later.officers == (CO[0], NEW) and opens_as(setup, [CO[0], NEW], newer)


def test_a_security_officer_hands_their_part_of_the_so_pin_over(setup: Setup, tmp_path: Path) -> None:
    """``--pin so``: the HSM Security Officers' parts, the same handover; the user PIN and its officers stay."""
    new_so = f"{REHEARSAL_SECURITY_OFFICERS[1]} (rehearsal)"
    answers = sign_in_sheet(tmp_path / "answers.yml", CO, security_officers=[*SO, new_so])
    new = [part(), part()]
    pins.hold_parts(setup.so_env, list(zip(SO, setup.so_parts, strict=True)))
    pins.hold_parts(new_parts_variable(setup.so_env), list(zip([SO[0], new_so], new, strict=True)))
    pins.hold_parts(setup.user_env, list(zip(CO, setup.parts, strict=True)))
    with transcript.open_transcript(setup.out / "transcripts", "pin-change", setup.defn, rehearsal=True,
                                    answers=answers, console=quiet()) as rec:
        result = pin_change_ceremony(setup.defn, "root", setup.out, rec, rehearsal=True, interactive=False, pin="so",
                                     hand_over=(SO[1], new_so))
    assert result.pin == "so" and result.officers == (SO[0], new_so)
    record = read_token_record(token(setup.label))
    assert record is not None and record["so"]["officers"] == [SO[0], new_so] and record["user"]["officers"] == CO
    assert record["pin_changes"][-1]["handover"] == {"from": SO[1], "to": new_so, "position": 2}
    with pytest.raises(p11e.PinIncorrect):
        token(setup.label).open(rw=True, so_pin=pins.combine_parts(setup.so_parts, setup.label, "so"))
    with token(setup.label).open(rw=True, so_pin=pins.combine_parts(new, setup.label, "so")):
        pass
    assert opens_with(setup, setup.parts)
    assert verify(rec.path, setup.out, trust=load_anchor(str(setup.out / "root.crt.pem"), setup.out),
                  rehearsal=True).exit_code == 0


def test_a_bad_handover_is_refused_with_one_message_and_the_token_unchanged(setup: Setup, tmp_path: Path) -> None:
    answers = sign_in_sheet(tmp_path / "answers.yml", [*CO, NEW])
    before, record = tree(setup.out), read_token_record(token(setup.label))
    label = re.escape(setup.label)
    # the old officer is not on the record
    with pytest.raises(RequestError, match=rf"^--from-officer '{re.escape(NEW)}': holds no part of the user PIN of "
                                           rf"token '{label}'; its record 'ceremony-token-record' names "
                                           rf"{re.escape(', '.join(CO))} \(allowed: one of them\); nothing was done"):
        hand_over(setup, answers, [part(), part()], old=NEW, to=f"{REHEARSAL_OFFICERS[3]} (rehearsal)")
    # the new officer already holds a part (whatever the spelling of their name)
    with pytest.raises(RequestError, match=rf"^--to-officer '{re.escape(CO[0].upper())}': already holds a part of the "
                                           rf"user PIN of token '{label}'"):
        hand_over(setup, answers, [part(), part()], to=CO[0].upper())
    # the new officer is not signed in as Crypto Officer
    with pytest.raises(PinError, match=rf"^'{re.escape(NEW)}' receives a part of the user PIN of token '{label}' but "
                                       r"is not signed in as Crypto Officer"):
        hand_over(setup, sign_in_sheet(tmp_path / "two.yml", CO), [part(), part()])
    assert opens_with(setup, setup.parts)
    assert read_token_record(token(setup.label)) == record
    assert {p for p in tree(setup.out) if not p.startswith("transcripts/")} == \
        {p for p in before if not p.startswith("transcripts/")}
    # the operator's command refuses before anyone signs in: no transcript at all
    before = tree(setup.out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")} | {"SOFTHSM2_CONF": str(SOFTHSM_CONF)}
    done = subprocess.run([INVOKE, "ceremony.change-pin", "--ca", "root", "--definition", str(setup.defn.path),
                           "--out", str(setup.out), "--rehearsal", "--from-officer", NEW, "--to-officer", CO[1]],
                          cwd=REPO, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 6, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.count("error: ") == 1 and f"--from-officer '{NEW}': holds no part" in done.stderr
    assert tree(setup.out) == before
    assert read_token_record(token(setup.label)) == record


def test_the_old_officer_gives_up_their_part_and_the_new_one_types_theirs_at_a_terminal(setup: Setup,
                                                                                         tmp_path: Path) -> None:
    """``invoke ceremony.change-pin --from-officer … --to-officer …`` under a pseudo-terminal: the officer who leaves
    types their current part, the new officer a new part twice in their place, none echoed; the token then opens with
    the parts of the officer who stayed and of the new one."""
    for name in (setup.user_env, setup.so_env):
        pins.release_parts(name)
    answers = sign_in_sheet(tmp_path / "answers.yml", [*CO, NEW])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "TEST_PC_"))}
    env |= {"SOFTHSM2_CONF": str(SOFTHSM_CONF), "LANG": "C.UTF-8", "COLUMNS": "200"}
    new = [part(), part()]
    child = pexpect.spawn(INVOKE, ["ceremony.change-pin", "--definition", str(setup.defn.path), "--ca", "root",
                                   "--out", str(setup.out), "--rehearsal", "--answers", str(answers),
                                   "--from-officer", CO[1], "--to-officer", NEW], cwd=str(REPO), env=env,
                          encoding="utf-8", timeout=120)
    child.logfile_read = seen = io.StringIO()
    for name, value in zip(CO, setup.parts, strict=True):  # the current parts: the leaving officer's included
        child.expect(f"part of {re.escape(name)} \\(Crypto Officer\\), not shown: ")
        child.sendline(value)
    for name, value in zip([CO[0], NEW], new, strict=True):  # the new parts: the new officer in the leaver's place
        child.expect(f"part of {re.escape(name)} \\(Crypto Officer\\), not shown: ")
        child.sendline(value)
        child.expect(f"the same part again, {re.escape(name)}: ")
        child.sendline(value)
    child.expect(pexpect.EOF)
    child.close()
    screen = seen.getvalue()
    assert child.exitstatus == 0, screen[-3000:]
    assert f"parts of {CO[0]}, {NEW}" in screen
    assert not [s for s in [*setup.parts, *new] if s in screen]
    rescan(softhsm.softhsm_module())
    record = read_token_record(token(setup.label))
    assert record is not None and record["user"]["officers"] == [CO[0], NEW]
    assert not opens_as(setup, [CO[0], NEW], setup.parts) and opens_as(setup, [CO[0], NEW], new)


def test_the_successor_roots_token_is_named_by_its_stem(tmp_path: Path) -> None:
    """``ceremony.change-pin --ca root.g2``: the pre-flight plans the PIN change of the successor root's own token
    (the rehearsal changes its split PIN), and a name that is neither a CA nor the successor is refused naming both."""
    data = copy.deepcopy(base_definition_data())
    root = data["cas"]["root"]
    root["successor"] = successor_data(root, successor_token(root))
    defn = load_definition(write_definition(tmp_path / "pki.yml", data))
    plan = plan_for(defn, "pin-change", "root.g2")
    assert [(n.ca, n.key) for n in plan.tokens] == [("root.g2", "present")] and plan.offline
    with pytest.raises(PreflightError, match=r"needs --ca NAME \(one of: root, qualified.*, root\.g2\)"):
        plan_for(defn, "pin-change", "root.g3")
