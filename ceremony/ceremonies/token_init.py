"""Token initialisation: an HSM token (label, SO PIN, user PIN) initialised at a ceremony, with split knowledge.

Every CA key lives on a token, and the token is born before the key: who set its PINs, and who can log in, is the
first fact of the key's history (EN 319 411-1 GEN-6.5.1, WebTrust 4.1: dual control over key activation). The
ceremony, in the order of the script ``token-initialisation``:

1. ``offline-check``; ``definition-check``: the token the definition names for the CA (or ``--token LABEL``) has no
   initialised token under that label (re-initialising one is refused unless asked, with what it destroys said),
   and the module has a blank token to initialise (SoftHSM keeps one free slot; a hardware HSM's partition or slot
   is created first with the vendor's tool, see docs/lifecycle.md).
2. ``so-pin-parts``: where ``ceremony.security_officer_quorum`` is k > 1, each of k HSM Security Officers signed in
   enters a part of the SO PIN, twice, never shown (:func:`ceremony.hsm.pins.split_pin`); with k = 1 the SO PIN
   comes from its usual source (the definition's ``hsm.so_pin_env``, ``--so-pin-file`` or the prompt).
3. ``user-pin-parts``: the same for the user PIN with ``ceremony.crypto_officer_quorum`` Crypto Officers.
   Every refusal about parts (a part entered twice by one officer, by someone not signed in with the role, too few
   parts, a short part, two equal parts) comes here, before the token is touched: it is unchanged.
4. ``token-initialise``: C_InitToken (through the module's function list; python-pkcs11 has no binding for it)
   with the label and the SO PIN, then, in a Security Officer session, C_InitPIN with the user PIN.
5. ``token-verify``: a fresh session logs in with the combined user PIN; the token's flags and identity are recorded.
6. ``sealing-key-generate``: the token's transcript-sealing key (the CA's ``hsm.sealing_label``), generated on it,
   never extractable; then the token's record (:data:`ceremony.hsm.session.TOKEN_RECORD_LABEL`), a public data object
   naming whose parts make each PIN and which sealing key the token was born with. Later ceremonies read it to ask
   the same officers for their parts, and the CA's key ceremony takes this sealing key instead of generating one.
7. ``outputs-write``: ``tokens/<label>.<16 hex>.token.json`` (the report) and ``tokens/<label>.<16 hex>.seal.pub.pem``
   (the sealing key's public key; the hex is the start of its SPKI SHA-256); ``fingerprint-read-aloud``.

**Which key seals, and why.** No sealing key exists before the token does, and no other key may seal this record:
a CA key never seals (EN 319 411-1 GEN-6.5.3-03), and the root token, whose sealing key could, is not in the room
when the root's own token is born. So the record is sealed by the new token's own sealing key, generated in step 6:
the seal proves that the transcript was closed by the token it describes, with the PIN the officers made. That key
is the one the CA's key ceremony then uses (it does not generate another), so the certificate the root issues for
it (``root.seal.crt.pem`` at the root key ceremony, ``<ca>.seal.crt.pem`` at a subordinate's signing) anchors this
transcript too: ``audit.verify`` says "not anchored" (exit 4) until that certificate is among the artifacts, then 0.

**What cannot be undone.** PKCS#11 has no call that returns a token to blank: a failure after step 4 leaves the
token initialised (the transcript says so, and the run destroys the sealing key it created); the ceremony is then
held again with ``reinitialise``, which needs the token's current SO PIN (C_InitToken checks it and keeps it).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pkcs11 import exceptions as p11e
from pkcs11.constants import TokenFlag

from ceremony.ceremonies.runner import CeremonyRun
from ceremony.ceremonies.steps import (
    PEM,
    SPKI,
    generate_sealing_key,
    keep_definition,
    lang_of,
    offline_check_step,
    prepare_out,
    say_definition,
    say_key_hash,
    say_outputs,
    signed_in,
    tell,
)
from ceremony.common.errors import HsmError, RequestError
from ceremony.common.terminal_text import say as words
from ceremony.definition.model import CA, LoadedDefinition, TokenRef
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.pins import (
    PART_DERIVATION,
    PART_ROLES,
    PinSource,
    SplitPin,
    get_pin,
    origin_text,
    parts_origin,
    pin_origin,
    split_pin,
)
from ceremony.hsm.session import (
    PinRejectedError,
    blank_slots,
    init_token,
    load_module,
    pin_source_for,
    pin_split,
    read_token_record,
    rescan,
    token_evidence,
    tokens_labelled,
    write_token_record,
)
from ceremony.transcript.recorder import Recorder, scripted_step

#: Where the initialisation reports and the sealing keys' public keys are written.
TOKENS_DIR = "tokens"


@dataclass(frozen=True)
class TokenInitResult:
    ca_name: str
    label: str
    serial: str
    user_officers: tuple[str, ...]  # whose parts make the user PIN (empty: a single PIN)
    so_officers: tuple[str, ...]
    sealing_spki_sha256: str
    report: Path
    sealing_public_key: Path


@dataclass(frozen=True)
class Target:
    """The token to initialise: the CA as held on it, the slot, and the token there now (re-initialisation)."""

    ca: CA
    label: str
    slot: Any
    existing: Any | None
    objects_hint: str


def on_label(ca: CA, label: str) -> CA:
    return ca.model_copy(update={"hsm": ca.hsm.model_copy(update={"token": TokenRef(label=label)})})


def find_target(defn: LoadedDefinition, ca_name: str, token: str | None, reinitialise: bool) -> Target:
    """The token and slot to initialise, refusing, before anyone signs in and with the token unchanged, a label
    already initialised (unless ``reinitialise``), a missing blank slot, a definition that names no label."""
    ca = defn.model.ca_or_successor(ca_name)  # a successor root (root rollover) by its stem, <root>.g<n>
    label = token or ca.hsm.token.initial_label()
    if not label:
        raise RequestError(f"{defn.path}: cas.{ca_name}.hsm.token names the token by "
                           f"{'serial' if ca.hsm.token.serial else 'a URI without a token= attribute'}; a token is "
                           "initialised with a label: give --token LABEL (the label the definition will name)")
    if len(label.encode("utf-8")) > 32:
        raise RequestError(f"token label {label!r}: longer than 32 bytes (allowed: 1 to 32 bytes, CK_TOKEN_INFO)")
    rescan(ca.hsm.module)  # SoftHSM lists a new blank slot only after C_Initialize
    lib = load_module(ca.hsm.module)
    existing = tokens_labelled(lib, label)
    if len(existing) > 1:
        raise HsmError(f"{len(existing)} tokens are labelled {label!r} on {ca.hsm.module}; nothing was done")
    if existing and not reinitialise:
        raise RequestError(f"token {label!r} is already initialised (serial {str(existing[0].serial).strip()}): "
                           "initialising it again destroys every object on it, the CA key and the transcript-sealing "
                           "key included: a key without a wrapped backup is lost for good, the certificates of that "
                           "key can sign no CRL again, and transcripts sealed by it stay verifiable only through the "
                           "certificate already issued. Nothing was done. When that is the decision, hold the "
                           "ceremony with --reinitialise (allowed: a new label, or --reinitialise)")
    if reinitialise and not existing:
        raise RequestError(f"--reinitialise: no initialised token is labelled {label!r}; nothing to re-initialise "
                           "(leave --reinitialise out to initialise a blank token)")
    if existing:
        slot = existing[0].slot
        record = read_token_record(existing[0])
        hint = "the token's record names its sealing key " + str((record or {}).get("sealing_key", {}).get(
            "spki_sha256", "?")) if record else "it has no record of a token initialisation ceremony"
        return Target(on_label(ca, label), label, slot, existing[0], hint)
    blanks = blank_slots(lib)
    if not blanks:
        raise HsmError(f"{ca.hsm.module}: no blank token to initialise (every slot's token is initialised). SoftHSM "
                       "offers a new one after each initialisation; on a hardware HSM create the partition or slot "
                       "with the vendor's tool first (docs/lifecycle.md); nothing was done")
    return Target(on_label(ca, label), label, blanks[0], None, "")


def _people(recorder: Recorder, role: str) -> list[str]:
    return signed_in(recorder, role)


def _pin(recorder: Recorder, target: Target, which: str, quorum: int, source: PinSource,
         current: SplitPin | None) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The PIN ``which`` (``user``/``so``): combined from ``quorum`` officers' parts, the parts of the officers the
    token's record names (``current``: the SO PIN of a token re-initialised), or one PIN from its usual source."""
    role = PART_ROLES[which]
    people = _people(recorder, role)
    source = replace(source, signed_in=tuple(people), lang=recorder.lang)
    if current is not None or quorum > 1:
        split = current or SplitPin(which, target.label)
        tell(recorder, "t_parts_ask", pin=split.describe(), n=len(current.officers) if current else quorum,
             people=", ".join(current.officers if current else people))
        pin, by = split_pin(split, source, people, quorum, confirm=current is None)
        facts = {"pin": which, "token": target.label, "quorum": len(by), "entered_by": list(by),
                 "origin": parts_origin(source), "derivation": PART_DERIVATION,
                 "current": current is not None}
        tell(recorder, "t_parts_entered", pin=split.describe(), people=", ".join(by))
        return pin, by, facts
    pin = get_pin(source)
    where = origin_text(source, pin_origin(source))
    tell(recorder, "t_pin_single", pin=f"the {'user' if which == 'user' else 'Security Officer'} PIN", where=where)
    return pin, (), {"pin": which, "token": target.label, "quorum": 1, "origin": pin_origin(source),
                     "described": where}


def _flags(token: Any) -> dict[str, bool]:
    return {name.lower(): bool(getattr(TokenFlag, name) & token.flags)
            for name in ("TOKEN_INITIALIZED", "USER_PIN_INITIALIZED", "LOGIN_REQUIRED", "USER_PIN_LOCKED",
                         "SO_PIN_LOCKED")}


def token_init_ceremony(defn: LoadedDefinition, ca_name: str, out: str | Path, recorder: Recorder, *,
                        rehearsal: bool, token: str | None = None, reinitialise: bool = False,
                        pin_file: str | None = None, so_pin_file: str | None = None,
                        interactive: bool = True) -> TokenInitResult:
    """Initialise the token of ``ca_name`` (or the one labelled ``token``) with split PINs where quorums say so."""
    lang = lang_of(recorder)
    model = defn.model
    offline_check_step(recorder, rehearsal)
    out_dir, manifest = prepare_out(out, rehearsal)
    with CeremonyRun(out_dir, manifest, recorder, "token-initialisation") as run:
        with scripted_step(recorder, "definition-check"):
            target = find_target(defn, ca_name, token, reinitialise)
            hsm = target.ca.hsm
            current_so = pin_split(target.existing, "so") if target.existing is not None else None
            split_user = hsm.split_user_pin if hsm.split_user_pin is not None else target.ca.role == "root"
            user_quorum = model.ceremony.crypto_officer_quorum if split_user else 1
            so_quorum = 1 if target.existing is not None else model.ceremony.security_officer_quorum
            say_definition(recorder, defn, ca_name)
            tell(recorder, "t_target", token=repr(target.label), module=hsm.module, slot=target.slot.slot_id)
            if target.existing is not None:
                tell(recorder, "t_reinitialise", token=repr(target.label), hint=target.objects_hint)
            tell(recorder, "t_quorums", user=user_quorum, so=len(current_so.officers) if current_so else so_quorum)
            if not split_user and model.ceremony.crypto_officer_quorum > 1:
                tell(recorder, "t_user_whole", ca=ca_name)
            say_outputs(recorder, out_dir / TOKENS_DIR, [f"{target.label}.<16 hex>.token.json",
                                                         f"{target.label}.<16 hex>.seal.pub.pem"])
            recorder.evidence("definition", {"path": str(defn.path), "sha256": defn.sha256, "ca": ca_name})
            recorder.evidence("slot", {"module": hsm.module, "slot_id": int(target.slot.slot_id),
                                       "slot_description": str(target.slot.slot_description).strip(),
                                       "label": target.label, "reinitialise": target.existing is not None,
                                       "crypto_officer_quorum": user_quorum, "security_officer_quorum": so_quorum,
                                       "user_pin_split": user_quorum > 1})
        with scripted_step(recorder, "so-pin-parts"):
            so_pin, so_by, facts = _pin(recorder, target, "so", so_quorum,
                                        pin_source_for(hsm, so_pin_file, interactive, so=True), current_so)
            recorder.evidence("pin-parts", facts)
            if current_so is not None:
                so_by = current_so.officers
        with scripted_step(recorder, "user-pin-parts"):
            user_pin, user_by, facts = _pin(recorder, target, "user", user_quorum,
                                            pin_source_for(hsm, pin_file, interactive), None)
            recorder.evidence("pin-parts", facts)
        with scripted_step(recorder, "token-initialise"):
            lib = load_module(hsm.module)
            init_token(lib, target.slot.slot_id, so_pin, target.label)
            recorder.evidence("token-initialised", {"slot_id": int(target.slot.slot_id), "label": target.label,
                                                    "reinitialised": target.existing is not None,
                                                    "time": dt.datetime.now(dt.UTC).isoformat()})
            tell(recorder, "t_initialised", token=repr(target.label), slot=target.slot.slot_id)
            fresh = target.slot.get_token()
            try:
                with fresh.open(rw=True, so_pin=so_pin) as so_session:
                    so_session.init_pin(user_pin)
            except p11e.PKCS11Error as exc:
                raise HsmError(f"token {target.label!r}: the Security Officer could not set the user PIN "
                               f"({type(exc).__name__}); the token is initialised without a user PIN: hold the "
                               "ceremony again with --reinitialise") from None
            del so_pin
            tell(recorder, "t_user_pin_set", token=repr(target.label))
        with scripted_step(recorder, "token-verify"):
            fresh = target.slot.get_token()
            try:
                session = run.enter(fresh.open(rw=True, user_pin=user_pin))
            except p11e.PKCS11Error as exc:
                raise PinRejectedError(f"token {target.label!r}: the new user PIN was refused at login "
                                       f"({type(exc).__name__})") from None
            del user_pin
            equipment: dict[str, Any] = token_evidence(hsm.module, lib, fresh).as_dict()
            equipment["flags"] = _flags(fresh)
            recorder.evidence("token", equipment)
            recorder.evidence("login", {"token": target.label, "pin": "user", "accepted": True,
                                        "session": "fresh", "combined_from": list(user_by)})
            tell(recorder, "w_token", label=repr(equipment["label"]), serial=equipment["serial"],
                 manufacturer=equipment["manufacturer"], model=equipment["model"],
                 firmware=equipment["firmware_version"])
            tell(recorder, "t_login_ok", people=", ".join(user_by) or words(lang, "t_one_pin"))
        with scripted_step(recorder, "sealing-key-generate"):
            sealing = generate_sealing_key(recorder, run, session, target.ca)
            public = sealing.public_key()
            digest = spki_sha256(public)
            record = {"label": target.label, "ca": ca_name, "initialised_at": dt.datetime.now(dt.UTC).isoformat(),
                      "user": {"role": PART_ROLES["user"], "officers": list(user_by)} if user_by else None,
                      "so": {"role": PART_ROLES["so"], "officers": list(so_by)} if so_by else None,
                      "derivation": PART_DERIVATION if user_by or so_by else None,
                      "sealing_key": {"label": hsm.sealing_label, "spki_sha256": digest},
                      "rehearsal": rehearsal}
            write_token_record(session, record)
            recorder.evidence("token-record", record)
            tell(recorder, "t_record", token=repr(target.label))
        with scripted_step(recorder, "outputs-write"):
            stem = f"{TOKENS_DIR}/{target.label}.{digest[:16]}"
            run.plan(f"{stem}.token.json", "token-initialisation-report", "json", token=target.label)
            run.plan(f"{stem}.seal.pub.pem", "sealing-public-key", "pem", token=target.label)
            run.check()
            report: dict[str, Any] = {"format": "ceremony-token-initialisation/1", "rehearsal": rehearsal,
                                      "ca": ca_name,
                                      "token": {k: equipment[k] for k in (
                                          "label", "serial", "manufacturer", "model", "firmware_version",
                                          "module_path", "module_sha256")},
                                      "slot_id": int(target.slot.slot_id),
                                      "reinitialised": target.existing is not None,
                                      "user_pin": {"split": bool(user_by), "officers": list(user_by)},
                                      "so_pin": {"split": bool(so_by), "officers": list(so_by)},
                                      "derivation": PART_DERIVATION, "sealing_key": record["sealing_key"]}
            run.stage(f"{stem}.token.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
            run.stage(f"{stem}.seal.pub.pem", public.public_bytes(PEM, SPKI))
            keep_definition(defn, run)
            run.record()
        with scripted_step(recorder, "fingerprint-read-aloud"):
            say_key_hash(recorder, words(lang, "t_sealing_fp", token=repr(target.label)), public)
        run.seal(sealing, f"{stem}.seal.pub.pem", "public-key")
    return TokenInitResult(ca_name, target.label, str(equipment["serial"]), user_by, so_by, digest,
                           out_dir / f"{stem}.token.json", out_dir / f"{stem}.seal.pub.pem")


__all__ = ["TOKENS_DIR", "TokenInitResult", "find_target", "token_init_ceremony"]
