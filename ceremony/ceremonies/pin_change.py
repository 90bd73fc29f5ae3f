"""Split-PIN change: the officers a token's record names replace their parts of its user or SO PIN, at a ceremony.

A split PIN (docs/lifecycle.md, "Token initialisation with split knowledge") is changed when an officer's part may
have been seen, on a schedule, or before an officer hands over the role. Nobody may learn the PIN on the way, so the
change is made of parts too: the same officers enter their current parts, then new ones, and the token is asked to
replace one PIN by the other (C_SetPIN). In the order of the script ``pin-change``:

1. ``offline-check``; ``definition-check``: the token (the CA's, or ``--token LABEL``) and its record; the PIN to
   change (the user PIN, or with ``pin="so"`` the Security Officer PIN) must be split there (a single PIN is refused:
   it is changed with the vendor's tool or at a re-initialisation); the officers the record names are the ones
   asked, and must be signed in with the role (Crypto Officers, HSM Security Officers).
2. ``old-pin-parts``: each of them enters their current part (never shown).
3. ``new-pin-parts``: each enters a new part, twice (the checks of the initialisation: at least 8 characters, no two
   officers with the same part, no officer twice); a new PIN equal to the old one is refused. Every refusal comes
   here, before the token is touched: it is unchanged, and no try is used.
4. ``pin-change``: a session logs in (as the user, or as the Security Officer) with the PIN the current parts make
   (wrong parts: refused by the token, one of its tries used, nothing changed) and calls C_SetPIN(old, new).
5. ``pin-verify``: a fresh session logs in with the new PIN. After an SO PIN change the user session the rest of
   the ceremony needs (the sealing key, the record) is then opened as at every ceremony, with the Crypto Officers'
   parts where the user PIN is split.
6. ``record-update``: the token's record gets a ``pin_changes`` line (which PIN, when, whose parts); the officers
   stay the same, except at a handover (below). The record object is replaced (destroyed, then written again; a
   failure in between writes the old one back).
7. ``outputs-write``: ``tokens/<label>.<UTC time>.<user|so>-pin-change.json`` (kind ``pin-change-report``).

**Handing a part over** (``hand_over=(old, new)``, ``--from-officer``/``--to-officer``): when an officer leaves the
role, their part goes to a new officer at a PIN change. The old officer enters their current part with the others in
``old-pin-parts`` (the PIN cannot be changed without it, and they are there to give it up); in ``new-pin-parts`` the
new officer enters a new part in the old officer's place (the same position in the combination) and the officers
who stay enter new parts as at every change, so no part the old officer ever saw is still in use. The record's
officer list then names the new officer, and every later ceremony on the token asks them. Refused in
``definition-check``, before anyone types a part and with the token unchanged: an old officer the record does not
name, a new officer who already holds a part of that PIN (one person, one part); the new officer must be signed in
with the role.

The transcript records who entered a part and who handed over to whom, never a part or a PIN, and is sealed by the
token's transcript-sealing key (its certificate in the output directory), never by the CA key.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from ceremony.ceremonies.destroy_key import on_token
from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    keep_definition,
    login,
    offline_check_step,
    prepare_out,
    say_definition,
    say_outputs,
    sealing_key,
    signed_in,
    tell,
)
from ceremony.common.errors import HsmError, PinError, RequestError
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import Hsm, LoadedDefinition
from ceremony.hsm.pins import (
    PART_DERIVATION,
    PART_ROLE_NAMES,
    PART_ROLES,
    PinSource,
    SplitPin,
    parts_origin,
    same_person,
    split_pin,
)
from ceremony.hsm.session import (
    TOKEN_RECORD_LABEL,
    PinRejectedError,
    find_token,
    load_module,
    pin_source_for,
    pin_split,
    read_token_record,
    write_token_record,
)
from ceremony.transcript.recorder import Recorder, scripted_step

#: Where the reports go (beside the token initialisation's).
TOKENS_DIR = "tokens"

#: The variable whose parts (``<VAR>_NEW_PART_<n>``, or held in-process) are the new parts: ``<pin_env>_NEW``.
NEW_SUFFIX = "_NEW"


@dataclass(frozen=True)
class PinChangeResult:
    ca_name: str
    token: str
    pin: str  # "user" or "so"
    officers: tuple[str, ...]
    report: Path


def new_parts_variable(pin_env: str | None) -> str:
    return f"{pin_env or 'CEREMONY_PIN'}{NEW_SUFFIX}"


@dataclass(frozen=True)
class Handover:
    """One officer's part of a split PIN handed to a new officer (names only: no part, no PIN)."""

    old: str  # as the token's record names them
    new: str
    position: int  # 1-based: the place of the part in the combination, kept by the new officer

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.old, "to": self.new, "position": self.position}


def handover_officers(split: SplitPin, old: str, new: str, role: str) -> tuple[Handover, tuple[str, ...]]:
    """The handover of ``old``'s part of ``split`` to ``new`` and the officers whose parts make the PIN afterwards
    (``new`` in ``old``'s place). Refused: an old officer the token's record does not name, a new officer who already
    holds a part (one person, one part), a blank name."""
    if not new.strip() or new != new.strip() or any(c in new for c in "\r\n\t"):
        raise RequestError(f"--to-officer {new!r}: not a name (allowed: the new {role}'s name as they sign in, on one "
                           "line, without surrounding spaces)")
    found = [n for n, officer in enumerate(split.officers) if same_person(officer, old)]
    if not found:
        raise RequestError(f"--from-officer {old!r}: holds no part of {split.describe()}; its record "
                           f"{TOKEN_RECORD_LABEL!r} names {', '.join(split.officers)} (allowed: one of them); "
                           "nothing was done, the token is unchanged")
    holder = next((officer for officer in split.officers if same_person(officer, new)), None)
    if holder is not None:
        raise RequestError(f"--to-officer {new!r}: already holds a part of {split.describe()} (its record names "
                           f"{', '.join(split.officers)}); one person holds one part, so a part goes to a {role} who "
                           "holds none; nothing was done, the token is unchanged")
    position = found[0]
    officers = tuple(new if n == position else officer for n, officer in enumerate(split.officers))
    return Handover(split.officers[position], new, position + 1), officers


def planned_handover(hsm: Hsm, pin: str, old: str, new: str) -> tuple[Handover, tuple[str, ...]]:
    """:func:`handover_officers` for the token of ``hsm`` as its record stands now (read without logging in), so that
    the task refuses a bad handover before anyone signs in."""
    split = pin_split(find_token(load_module(hsm.module), hsm.token), pin)
    if split is None:
        raise RequestError(f"{hsm.token.describe()}: its {'SO' if pin == 'so' else 'user'} PIN is not split (no "
                           f"officers named in its record {TOKEN_RECORD_LABEL!r}); there is no part to hand over")
    return handover_officers(split, old, new, PART_ROLE_NAMES[pin])


def _login(token: Any, pin: str, what: str, so: bool) -> Any:
    try:
        return token.open(rw=True, so_pin=pin) if so else token.open(rw=True, user_pin=pin)
    except (p11e.PinIncorrect, p11e.PinLenRange) as exc:
        raise PinRejectedError(f"token {str(token.label).strip()!r}: {what} was refused at login "
                               f"({type(exc).__name__}); nothing was changed, one of the token's tries was used") \
            from None
    except p11e.PinLocked:
        raise PinRejectedError(f"token {str(token.label).strip()!r}: the {'SO' if so else 'user'} PIN is locked"
                               + ("" if so else "; the Security Officers unlock it (C_InitPIN) at a token ceremony"),
                               locked=True) from None


def _replace_record(session: Any, record: dict[str, Any]) -> None:
    """The token's record replaced by ``record``; a failure after the old one is destroyed writes it back."""
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: TOKEN_RECORD_LABEL}))
    if len(found) != 1:
        raise HsmError(f"{len(found)} objects labelled {TOKEN_RECORD_LABEL!r} on the token; expected its one record")
    old = json.loads(bytes(found[0][Attribute.VALUE]).decode("utf-8"))
    found[0].destroy()
    try:
        write_token_record(session, record)
    except BaseException:
        write_token_record(session, {k: v for k, v in old.items() if k != "format"})
        raise


def pin_change_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                        rehearsal: bool, token: str | None = None, pin: str = "user", pin_file: str | None = None,
                        interactive: bool = True, now: dt.datetime | None = None,
                        hand_over: tuple[str, str] | None = None) -> PinChangeResult:
    """Change the split ``pin`` (``user`` or ``so``) of the token of ``ca_name`` (or the token labelled ``token``);
    ``pin_file``: the user PIN's file, for the login after an SO PIN change where the user PIN is not split;
    ``hand_over``: (old officer, new officer), the old officer's part handed to the new one (module docstring)."""
    if pin not in PART_ROLES:
        raise RequestError(f"--pin {pin!r}: not a PIN of a token (allowed: user, so)")
    so = pin == "so"
    model = defn.model
    ca = on_token(model.ca_or_successor(ca_name), token)  # a successor root (root rollover) by its stem, <root>.g<n>
    hsm = ca.hsm
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    with CeremonyRun(out_dir, manifest, recorder, "pin-change") as run:
        with scripted_step(recorder, "definition-check"):
            tok = find_token(load_module(hsm.module), hsm.token)
            label = str(tok.label).strip()
            split = pin_split(tok, pin)
            if split is None:
                raise RequestError(f"{hsm.token.describe()}: its {'SO' if so else 'user'} PIN is not split (no "
                                   f"officers named in its record {TOKEN_RECORD_LABEL!r}); this ceremony changes a "
                                   "split PIN's parts. A single PIN is changed with the HSM vendor's tool, or the "
                                   "token is initialised again with parts (invoke ceremony.init-token --reinitialise)")
            if so and not hsm.so_pin_env:
                raise RequestError(f"cas.{ca_name}.hsm.so_pin_env: not set; the parts of the SO PIN are handed over "
                                   "under that variable's name, as at the token's initialisation")
            record = read_token_record(tok)
            assert record is not None
            handover: Handover | None = None
            officers = split.officers
            if hand_over is not None:
                handover, officers = handover_officers(split, hand_over[0], hand_over[1], PART_ROLE_NAMES[pin])
            report = f"{TOKENS_DIR}/{label}.{moment:%Y%m%dT%H%M%SZ}.{pin}-pin-change.json"
            run.plan(report, "pin-change-report", "json", token=label)
            run.check()
            say_definition(recorder, defn, ca_name)
            tell(recorder, "p_plan", token=repr(label), pin=words(recorder.lang, f"pin_{pin}", token=repr(label)),
                 officers=", ".join(split.officers), role=words(recorder.lang, f"role_{pin}"))
            if handover is not None:
                tell(recorder, "p_handover_plan", old=handover.old, new=handover.new, n=handover.position,
                     officers=", ".join(officers))
            say_outputs(recorder, out_dir, run.planned)
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name,
                                             "token": label, "pin": pin, "officers": list(split.officers),
                                             **({"handover": handover.as_dict()} if handover else {})})
        people = signed_in(recorder, PART_ROLES[pin])
        if handover is not None and people:
            # The new officer's part is asked for under the name they signed in with; one not signed in with the
            # role is refused before anyone types a part.
            signed = next((p for p in people if same_person(p, handover.new)), None)
            if signed is None:
                raise PinError(f"{handover.new!r} receives a part of {split.describe()} but is not signed in as "
                               f"{PART_ROLE_NAMES[pin]} (signed in: {', '.join(people)}); nothing was done, the "
                               "token is unchanged")
            handover = replace(handover, new=signed)
            officers = tuple(signed if same_person(o, signed) else o for o in officers)
        with scripted_step(recorder, "old-pin-parts"):
            old_source = replace(pin_source_for(hsm, None, interactive, so=so), signed_in=tuple(people),
                                 lang=recorder.lang)
            old_pin, old_by = split_pin(split, old_source, people)
            recorder.evidence("pin-parts", {"pin": pin, "token": label, "stage": "current",
                                            "entered_by": list(old_by), "origin": parts_origin(old_source),
                                            "derivation": PART_DERIVATION})
            tell(recorder, "p_current_by", people=", ".join(old_by))
        with scripted_step(recorder, "new-pin-parts"):
            new_source = PinSource(env=new_parts_variable(hsm.so_pin_env if so else hsm.pin_env),
                                   interactive=interactive, signed_in=tuple(people), lang=recorder.lang,
                                   so=so)
            new_pin, new_by = split_pin(SplitPin(pin, label, officers), new_source, people, confirm=True)
            if new_pin == old_pin:
                raise PinError(f"the new parts of {split.describe()} make the same PIN as the current ones: each "
                               "officer enters a new part; nothing was done")
            recorder.evidence("pin-parts", {"pin": pin, "token": label, "stage": "new",
                                            "entered_by": list(new_by), "origin": parts_origin(new_source),
                                            "derivation": PART_DERIVATION})
            tell(recorder, "p_new_by", people=", ".join(new_by))
            if handover is not None:
                recorder.evidence("pin-handover", {"pin": pin, "token": label, **handover.as_dict(),
                                                   "old_part_entered_by": handover.old,
                                                   "new_part_entered_by": handover.new})
                tell(recorder, "p_handed_over", old=handover.old, new=handover.new, n=handover.position,
                     pin=words(recorder.lang, f"pin_{pin}", token=repr(label)))
        with scripted_step(recorder, "pin-change"):
            with _login(tok, old_pin, "the PIN the current parts make", so) as session:
                try:
                    session.set_pin(old_pin, new_pin)
                except p11e.PKCS11Error as exc:
                    raise HsmError(f"token {label!r}: C_SetPIN failed ({type(exc).__name__}); the current parts "
                                   "still open it") from None
            del old_pin
            changed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
            recorder.evidence("pin-changed", {"token": label, "pin": pin, "time": changed_at.isoformat(),
                                              "by": list(new_by)})
            tell(recorder, "p_changed", pin=words(recorder.lang, f"pin_{pin}", token=repr(label)))
        with scripted_step(recorder, "pin-verify"):
            fresh = _login(find_token(load_module(hsm.module), hsm.token), new_pin, "the PIN the new parts make", so)
            if so:  # the Security Officer's session closes; the user session of every ceremony follows
                fresh.close()
                session = login(recorder, run.stack, hsm, pin_file, interactive)
            else:
                session = run.enter(fresh)
            del new_pin
            recorder.evidence("login", {"token": label, "pin": pin, "accepted": True, "session": "fresh",
                                        "combined_from": list(new_by)})
            tell(recorder, "p_fresh_login", people=", ".join(new_by))
            seal_key, seal_cert = sealing_key(recorder, session, ca_name, ca, out_dir)
        with scripted_step(recorder, "record-update"):
            updated = {k: v for k, v in record.items() if k != "format"}
            line: dict[str, Any] = {"pin": pin, "time": changed_at.isoformat(), "by": list(new_by)}
            if handover is not None:
                # the officers whose parts make the PIN from now on: later ceremonies ask them
                updated[pin] = {**record[pin], "officers": list(new_by)}
                line["handover"] = handover.as_dict()
            updated["pin_changes"] = [*record.get("pin_changes", []), line]
            _replace_record(session, updated)
            recorder.evidence("token-record", updated)
            tell(recorder, "p_record_handover" if handover is not None else "p_record", token=repr(label),
                 people=", ".join(new_by))
        with scripted_step(recorder, "outputs-write"):
            body = {"format": "ceremony-pin-change/1", "rehearsal": rehearsal, "ca": ca_name, "token": label,
                    "pin": pin, "time": changed_at.isoformat(), "officers": list(new_by),
                    "handover": handover.as_dict() if handover is not None else None,
                    "derivation": PART_DERIVATION, "record": updated}
            run.stage(report, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
            keep_definition(defn, run)
            run.record()
        run.seal(seal_key, seal_cert, "certificate")
    return PinChangeResult(ca_name, label, pin, new_by, out_dir / report)
