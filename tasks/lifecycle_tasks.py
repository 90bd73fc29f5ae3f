"""The life-cycle ceremonies: token initialisation, subordinate renewal (same key) and re-key (new key), sealing-key
certification, key destruction, root rollover (the successor root's key ceremony, the cross-certification), CA
termination, split-PIN change.

Thin, as the other ceremony tasks: resolve the definition and output directory, run the pre-flight, record the
transcript, call the engine, print the summary. They join the ``ceremony`` namespace (``tasks/__init__.py``) as
``ceremony.init-token``, ``ceremony.renew-subordinate``, ``ceremony.certify-sealing-key``, ``ceremony.destroy-key``,
``ceremony.new-root``, ``ceremony.cross-certify``, ``ceremony.rekey-subordinate``, ``ceremony.certify-rekey``,
``ceremony.terminate`` and ``ceremony.change-pin``. PINs and PIN parts are never arguments.
"""

from __future__ import annotations

import datetime as dt

from invoke import Context, task

from ._cli import operator_errors
from .ceremony_tasks import ANSWERS_HELP, HELP, LANG_HELP, _load, _out, _record, preflight_or_stop

CA_HELP = "name of the CA in the definition"


@task(name="renew-subordinate", help={**HELP, "ca": "name of the subordinate CA to renew (same key)",
                                      "issuer_cert": "the issuer's certificate (default: OUT/<issuer>.crt.pem)",
                                      "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def renew_subordinate(c: Context, ca: str, env: str | None = None, definition: str | None = None,
                      out: str | None = None, issuer_cert: str | None = None, pin_file: str | None = None,
                      rehearsal: bool = False, answers: str | None = None, lang: str | None = None) -> None:
    """At the offline root: re-certify a subordinate's existing key (OUT/<ca>.g<n>.crt.pem, new serial and validity)."""
    from ceremony.ceremonies.renewal import renewal_ceremony, renewal_inputs
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    renewal_inputs(defn, ca, out_dir)  # bad input is refused before anyone signs in  # type: ignore[arg-type]
    report = preflight_or_stop(defn, "subordinate-renewal", out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("subordinate-renewal", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = renewal_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, issuer_cert_path=issuer_cert,
                                  pin_file=pin_file)
    print(f"{ca}: generation {result.generation} issued for the same key ({result.key_spki_sha256})")
    show_summary("subordinate-renewal", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="certify-sealing-key", help={**HELP, "ca": "the CA whose new transcript-sealing key is certified",
                                        "csr": "its CSR, OUT/<ca>.seal.<16 hex>.csr.pem (default: the only one "
                                               "without a certificate)",
                                        "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def certify_sealing_key(c: Context, ca: str, csr: str | None = None, env: str | None = None,
                        definition: str | None = None, out: str | None = None, pin_file: str | None = None,
                        rehearsal: bool = False, answers: str | None = None, lang: str | None = None) -> None:
    """At the offline root: certify a sealing key a key restore left with a CSR only, anchoring its transcripts."""
    from ceremony.ceremonies.sealing_certification import (
        check_sealing_key_csr,
        refuse_ca_key,
        sealing_certification_ceremony,
        sealing_csr_for,
    )
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    defn.model.ca(ca)  # type: ignore[attr-defined]  # an unknown CA is refused before anyone signs in
    out_dir = _out(env, out, defn)
    csr_path = sealing_csr_for(out_dir, ca, csr)  # which CSR, and bad input, refused before the sign-in
    _, digest, _ = check_sealing_key_csr(csr_path, ca)
    refuse_ca_key(ca, digest, out_dir)
    report = preflight_or_stop(defn, "sealing-certification", out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("sealing-certification", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = sealing_certification_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, csr=csr_path,
                                                pin_file=pin_file)
    print(f"{result.certificate}: anchors {', '.join(result.anchors) or 'no transcript yet'}")
    show_summary("sealing-certification", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca,
                 env=env, definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="destroy-key", iterable=["token"], help={
    **HELP, "ca": "the CA whose key is destroyed",
    "token": "label of a token holding the key (repeat for each; default: the token the definition names); every "
             "token's PIN comes from the same source",
    "destroy_sealing_key": "destroy the token's transcript-sealing key too; the root token's sealing key then seals",
    "seal_token": "with --destroy-sealing-key of the root: the other root token (a restored one) whose sealing key "
                  "seals",
    "key_generation": "which key of a re-keyed CA: the generation whose certificate first held it (1: the key of the "
                      "key ceremony, n: the re-key's <key_label>.g<n>); required once the CA has had two keys",
    "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def destroy_key(c: Context, ca: str, token: list[str] | None = None, env: str | None = None,
                definition: str | None = None, out: str | None = None, destroy_sealing_key: bool = False,
                seal_token: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
                answers: str | None = None, lang: str | None = None, key_generation: str | None = None) -> None:
    """Destroy a CA key on the tokens that hold it, with listings before and after, its shares shredded."""
    from ceremony.ca.generations import key_label_for, parse_key_generation
    from ceremony.ceremonies.destroy_key import (
        destroy_key_ceremony,
        destruction_key,
        on_token,
        refuse_valid_certificates,
    )
    from ceremony.definition.model import LoadedDefinition
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    model = defn.model  # type: ignore[attr-defined]
    held = model.ca(ca)  # an unknown CA is refused before anyone signs in
    out_dir = _out(env, out, defn)
    wanted = parse_key_generation(key_generation)
    # bad input is refused before anyone signs in
    generation, digest, certs = destruction_key(out_dir, ca, wanted)
    refuse_valid_certificates(defn, ca, digest, certs, dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    # the pre-flight looks at the first token named and at the key's own label, as the ceremony will
    looked_at = on_token(held, token[0] if token else None)
    looked_at = looked_at.model_copy(update={"hsm": looked_at.hsm.model_copy(update={
        "key_label": key_label_for(held.hsm.key_label, generation), "seal_label": held.hsm.sealing_label})})
    cas = {**model.cas, ca: looked_at}
    checked = LoadedDefinition(model.model_copy(update={"cas": cas}), defn.path, defn.sha256)  # type: ignore
    report = preflight_or_stop(checked, "key-destruction", out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("key-destruction", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = destroy_key_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, tokens=token or [],
                                      destroy_sealing_key=destroy_sealing_key, seal_token=seal_token,
                                      pin_file=pin_file, key_generation=wanted)
    print(f"key {result.spki_sha256} of {ca!r} destroyed on {', '.join(result.tokens)}; report {result.report}")
    show_summary("key-destruction", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="init-token", help={
    **HELP, "ca": "the CA whose token is initialised (its token label, module and PIN variables come from the "
                  "definition)",
    "token": "the label to give the token (default: cas.<ca>.hsm.token.label)",
    "reinitialise": "the token is initialised already and is to be erased: every object on it is destroyed (its CA "
                    "key and sealing key included); its current SO PIN is needed",
    "so_pin_file": "a 0600 file holding the SO PIN, where the SO PIN is not split (security_officer_quorum 1)",
    "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def init_token(c: Context, ca: str, token: str | None = None, env: str | None = None, definition: str | None = None,
               out: str | None = None, reinitialise: bool = False, pin_file: str | None = None,
               so_pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
               lang: str | None = None) -> None:
    """Initialise an HSM token at a ceremony: label, SO PIN and user PIN, each split among its officers' parts."""
    from ceremony.ceremonies.token_init import find_target, token_init_ceremony
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    find_target(defn, ca, token, reinitialise)  # type: ignore[arg-type]  # bad input refused before the sign-in
    report = preflight_or_stop(defn, "token-initialisation", out_dir, rehearsal, lang, ca=ca)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("token-initialisation", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = token_init_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, token=token,  # type: ignore
                                     reinitialise=reinitialise, pin_file=pin_file, so_pin_file=so_pin_file)
    split = f"user PIN from the parts of {', '.join(result.user_officers)}" if result.user_officers else "one user PIN"
    print(f"token {result.label!r} (serial {result.serial}) initialised: {split}; sealing key "
          f"{result.sealing_spki_sha256}")
    show_summary("token-initialisation", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="new-root", help={**HELP, "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def new_root(c: Context, env: str | None = None, definition: str | None = None, out: str | None = None,
             pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
             lang: str | None = None) -> None:
    """Root rollover: the successor root's key (cas.<root>.successor) and its self-signed OUT/<root>.g<n>.crt.pem."""
    from ceremony.ceremonies.rollover import NEW_ROOT, new_root_ceremony, new_root_inputs
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    roll = new_root_inputs(defn, out_dir)  # type: ignore[arg-type]  # bad input is refused before anyone signs in
    report = preflight_or_stop(defn, NEW_ROOT, out_dir, rehearsal, lang, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record(NEW_ROOT, defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = new_root_ceremony(defn, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)  # type: ignore[arg-type]
    print(f"{roll.new_stem}: successor root, key {result.key_spki_sha256}, certificate SHA-256 "
          f"{result.fingerprint_sha256}")
    show_summary(NEW_ROOT, defn, out_dir, before, getattr(rec, "path", None), rehearsal, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="cross-certify", help={**HELP, "reverse": "the successor root certifies the old root's key (when the "
                                                     "definition's successor.cross_certificate.reverse asks for it)",
                                  "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def cross_certify(c: Context, env: str | None = None, definition: str | None = None, out: str | None = None,
                  reverse: bool = False, pin_file: str | None = None, rehearsal: bool = False,
                  answers: str | None = None, lang: str | None = None) -> None:
    """At the offline root: the old root certifies the successor's key (--reverse: the successor the old root's)."""
    from ceremony.ceremonies.rollover import CROSS, cross_certification_ceremony, cross_inputs
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    plan, *_ = cross_inputs(defn, out_dir, reverse, rehearsal)  # type: ignore[arg-type]  # refused before the sign-in
    report = preflight_or_stop(defn, CROSS, out_dir, rehearsal, lang, ca=plan.issuer_stem, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record(CROSS, defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = cross_certification_ceremony(defn, out_dir, rec, rehearsal=rehearsal,  # type: ignore[arg-type]
                                              reverse=reverse, pin_file=pin_file)
    print(f"{result.certificate}: cross-certificate for the key {result.subject_spki_sha256}")
    show_summary(CROSS, defn, out_dir, before, getattr(rec, "path", None), rehearsal, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(help={**HELP, "ca": "the subordinate CA to terminate (cas.<ca>.termination records the decision)",
            "trust": "the root certificate the archive's transcripts are verified against (default OUT/<root>.crt.pem)",
            "crl_dir": "the CRL job's publication directory (default OUT/crl; on the CA host /var/lib/ceremony/crl): "
                       "each final CRL follows the CRL published there and takes its place",
            "registry": "the CA's registry (default OUT/<ca>-registry.sqlite3, else the path in "
                        "/etc/ceremony/<ca>.conf on the CA host)",
            "ocsp_store": "the OCSP job's store, replaced by the final one after the seal (on the CA host "
                          "/var/lib/ceremony/ocsp/<ca>.sqlite3); without it the final store is only written to "
                          "OUT/termination/<ca>/",
            "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def terminate(c: Context, ca: str, env: str | None = None, definition: str | None = None, out: str | None = None,
              trust: str | None = None, crl_dir: str | None = None, registry: str | None = None,
              ocsp_store: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
              answers: str | None = None, lang: str | None = None) -> None:
    """Terminate a subordinate CA: revoke what it issued, sign its final CRLs (every partition, every key) and OCSP
    responses, write and verify its archive (OUT/termination/<ca>.termination-archive.tar)."""
    from ceremony.ceremonies.termination import terminate_ceremony, termination_inputs
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    # bad input is refused before anyone signs in
    termination_inputs(defn, ca, out_dir, dt.datetime.now(dt.UTC), crl_dir, registry,  # type: ignore[arg-type]
                       ocsp_store=ocsp_store)
    report = preflight_or_stop(defn, "ca-termination", out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("ca-termination", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = terminate_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file,  # type: ignore
                                    trust=trust, crl_dir=crl_dir, registry=registry, ocsp_store=ocsp_store)
    crls = "; ".join(f"{c.path} #{c.number} ({c.entries} entries)" for c in result.crls)
    print(f"{ca!r} terminated: {len(result.revoked)} certificate(s) revoked; final CRL(s) {crls}; archive "
          f"{result.archive} (SHA-256 {result.archive_sha256})")
    show_summary("ca-termination", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="change-pin", help={**HELP, "ca": "the CA whose token's split PIN is changed",
                               "token": "the token's label (default: the token the definition names)",
                               "pin": "which PIN: user (default) or so",
                               "from_officer": "hand this officer's part over (with --to-officer): they enter their "
                                               "current part and hold none afterwards",
                               "to_officer": "the officer who receives the part (signed in with the role, holding no "
                                             "part yet): they enter a new part in its place",
                               "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def change_pin(c: Context, ca: str, token: str | None = None, pin: str = "user", env: str | None = None,
               definition: str | None = None, out: str | None = None, pin_file: str | None = None,
               rehearsal: bool = False, answers: str | None = None, lang: str | None = None,
               from_officer: str | None = None, to_officer: str | None = None) -> None:
    """Change a token's split PIN: the officers its record names enter their current parts, then new ones; with
    --from-officer/--to-officer one officer's part is handed over to a new officer."""
    from ceremony.ceremonies.destroy_key import on_token
    from ceremony.ceremonies.pin_change import pin_change_ceremony, planned_handover
    from ceremony.common.errors import RequestError
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    # an unknown CA is refused before anyone signs in; the successor root is named by its stem, <root>.g<n>
    held = defn.model.ca_or_successor(ca)  # type: ignore[attr-defined]
    if pin not in ("user", "so"):
        raise RequestError(f"--pin {pin!r}: not a PIN of a token (allowed: user, so)")
    hand_over = None
    if (from_officer is None) != (to_officer is None):
        raise RequestError("--from-officer and --to-officer go together: the officer who hands their part over and "
                           "the one who receives it (allowed: both, or neither for a change by the same officers)")
    if from_officer is not None and to_officer is not None:
        hand_over = (from_officer, to_officer)
        planned_handover(on_token(held, token).hsm, pin, from_officer, to_officer)  # refused before the sign-in
    out_dir = _out(env, out, defn)
    report = preflight_or_stop(defn, "pin-change", out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("pin-change", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = pin_change_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, token=token,  # type: ignore
                                     pin=pin, pin_file=pin_file, hand_over=hand_over)
    print(f"token {result.token!r}: {result.pin} PIN changed; parts of {', '.join(result.officers)}; report "
          f"{result.report}")
    show_summary("pin-change", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="rekey-subordinate", help={**HELP, "ca": "name of the subordinate CA that gets a new key",
                                      "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def rekey_subordinate(c: Context, ca: str, env: str | None = None, definition: str | None = None,
                      out: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
                      answers: str | None = None, lang: str | None = None) -> None:
    """At the subordinate's host: the next generation's key on its token (<key_label>.g<n>), OUT/<ca>.g<n>.csr.pem."""
    from ceremony.ceremonies.rekey import REKEY_KEY, rekey_key_ceremony, rekey_plan
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    rekey_plan(defn, ca, out_dir)  # type: ignore[arg-type]  # bad input is refused before anyone signs in
    report = preflight_or_stop(defn, REKEY_KEY, out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record(REKEY_KEY, defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = rekey_key_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal,  # type: ignore[arg-type]
                                    pin_file=pin_file)
    print(f"{ca}: key of generation {result.generation} generated under {result.key_label!r} "
          f"({result.key_spki_sha256})")
    show_summary(REKEY_KEY, defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="certify-rekey", help={**HELP, "ca": "name of the subordinate CA whose new key is certified",
                                  "csr": "the re-key's CSR (default: OUT/<ca>.g<n>.csr.pem, n the next generation)",
                                  "issuer_cert": "the issuer's certificate (default: OUT/<issuer>.crt.pem)",
                                  "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def certify_rekey(c: Context, ca: str, csr: str | None = None, env: str | None = None, definition: str | None = None,
                  out: str | None = None, issuer_cert: str | None = None, pin_file: str | None = None,
                  rehearsal: bool = False, answers: str | None = None, lang: str | None = None) -> None:
    """At the offline root: certify a subordinate's re-key CSR as OUT/<ca>.g<n>.crt.pem (new key, new serial)."""
    from ceremony.ceremonies.rekey import REKEY_CERTIFY, certify_rekey_ceremony, rekey_csr_inputs
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    rekey_csr_inputs(defn, ca, out_dir, csr, rehearsal)  # type: ignore[arg-type]  # refused before the sign-in
    report = preflight_or_stop(defn, REKEY_CERTIFY, out_dir, rehearsal, lang, ca=ca, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record(REKEY_CERTIFY, defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = certify_rekey_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal,  # type: ignore[arg-type]
                                        csr_path=csr, issuer_cert_path=issuer_cert, pin_file=pin_file)
    print(f"{ca}: generation {result.generation} certified for the new key {result.key_spki_sha256}")
    show_summary(REKEY_CERTIFY, defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))
