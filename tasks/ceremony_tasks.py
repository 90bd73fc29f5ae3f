"""Ceremony tasks: root key and certificate, subordinate key and CSR, subordinate signing, rehearsal.

Thin: resolve the definition and output directory, pick the record keeper, call the engine.
PINs are never arguments: they come from the variables named in the definition, a 0600 file
(``--pin-file``) or a prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors

HELP = {
    "env": "environment (required): reads inventory/ENV/pki.yml, writes to out/ENV",
    "definition": "path of the PKI definition (overrides --env)",
    "out": "output directory (default: out/ENV)",
    "pin_file": "read the PIN from this file (mode 0600) instead of the environment or a prompt",
    "rehearsal": "mark everything as a rehearsal (no offline enforcement, CN '(REHEARSAL)')",
}
LANG_HELP = "language of the terminal: fr or en (default: ceremony.language in the definition)"
ANSWERS_HELP = ("YAML file with the sign-in (participants, roles, identity checks), bag serials and confirmations "
                "instead of prompts (see docs/transcripts.md)")


def _definition(env: str | None, definition: str | None) -> Path:
    """``--env`` is never assumed: a forgotten option must not mean production."""
    if definition:
        return Path(definition)
    if not env:
        from ceremony.common.errors import DefinitionError

        envs = sorted(p.parent.name for p in Path("inventory").glob("*/pki.yml"))
        raise DefinitionError("command line", "--env", "missing: say which environment this ceremony is for",
                              ", ".join(envs) or "the name of a folder of inventory/ holding pki.yml")
    return Path("inventory") / env / "pki.yml"


def _out(env: str | None, out: str | None, defn: object) -> Path:
    return Path(out) if out else Path("out") / (env or defn.model.environment)  # type: ignore[attr-defined]


def _load(env: str | None, definition: str | None, rehearsal: bool) -> object:
    """The definition, refusing ``--rehearsal`` on a production definition: a rehearsal must never touch
    the production tokens (it would generate a key on the token the definition names)."""
    from ceremony.common.errors import DefinitionError
    from ceremony.definition.model import load_definition

    defn = load_definition(_definition(env, definition))
    if rehearsal and defn.model.environment == "production":
        raise DefinitionError(str(defn.path), "environment", "is production: --rehearsal would use the production "
                              "tokens it names", "rehearse with 'invoke rehearse' (throwaway tokens) or with a "
                              "definition whose environment is not production")
    return defn


def preflight_or_stop(defn: object, ceremony: str, out_dir: Path, rehearsal: bool, lang: str | None = None,
                      **checks: object) -> object:
    """Run the pre-flight, show every finding, and stop before anyone signs in when one fails."""
    from ceremony.ceremonies.preflight import run_preflight
    from ceremony.common.display import make_console, text

    report = run_preflight(defn, ceremony, out_dir, rehearsal=rehearsal, lang=terminal_lang(defn, lang),
                           **checks)  # type: ignore[arg-type]
    console = make_console()
    console.rule(text(("Pre-flight", "bold"), f" — {ceremony}"))
    for finding in report.findings:
        style = "red" if not finding.ok else "yellow" if finding.warning else None
        console.print(finding.line(), style=style)
    report.raise_if_failed()
    return report


def terminal_lang(defn: object, lang: str | None) -> str:
    """``--lang`` if given, else the definition's ``ceremony.language``."""
    from ceremony.common.terminal_text import check_lang

    return check_lang(lang) if lang else defn.model.ceremony.language  # type: ignore[attr-defined]


@contextlib.contextmanager
def _record(script: str, defn: object, out: Path, rehearsal: bool, answers: str | None = None,
            preflight: object = None, lang: str | None = None) -> Iterator[object]:
    """The ceremony's transcript (ceremony.transcript.recording): sign-in and confirmations at the terminal, or from
    ``answers`` (YAML: participants, bag serials, confirmations); a rehearsal without answers uses generated
    rehearsal participants. The header records the printed paper script and the pre-flight's report."""
    from ceremony.transcript.paper_script import printed_script_files
    from ceremony.transcript.recording import recorded

    header: dict[str, object] = {"paper_script": printed_script_files(out, script)}
    if preflight is not None:
        header["preflight"] = preflight.as_dict()  # type: ignore[attr-defined]
    with recorded(script, defn, out, rehearsal=rehearsal, answers=Path(answers) if answers else None,
                  header=header, lang=terminal_lang(defn, lang)) as rec:
        yield rec


@task(help={**HELP, "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def root(c: Context, env: str | None = None, definition: str | None = None, out: str | None = None,
         pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
         lang: str | None = None) -> None:
    """Root key ceremony: generate the root key in its HSM and issue the self-signed root certificate."""
    from ceremony.ceremonies.root_key import root_ceremony
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    report = preflight_or_stop(defn, "root-key-generation", out_dir, rehearsal, lang, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("root-key-generation", defn, out_dir, rehearsal, answers, report, lang) as rec:
        root_ceremony(defn, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)
    show_summary("root-key-generation", defn, out_dir, before, getattr(rec, "path", None), rehearsal, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="subordinate-key", help={**HELP, "ca": "name of the subordinate CA in the definition",
                                    "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def subordinate_key(c: Context, ca: str, env: str | None = None, definition: str | None = None,
                    out: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
                    answers: str | None = None, lang: str | None = None) -> None:
    """Generate a subordinate CA key on its own HSM and write its CSR (PEM and DER)."""
    from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    report = preflight_or_stop(defn, "subordinate-key-generation", out_dir, rehearsal, lang, ca=ca,
                               pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("subordinate-key-generation", defn, out_dir, rehearsal, answers, report, lang) as rec:
        subordinate_key_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)
    show_summary("subordinate-key-generation", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca,
                 env=env, definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(name="sign-subordinate", help={**HELP, "ca": "name of the subordinate CA in the definition",
                                     "csr": "the subordinate's CSR (PEM or DER), carried to the offline root",
                                     "issuer_cert": "the issuer's certificate (default: OUT/<issuer>.crt.pem)",
                                     "answers": ANSWERS_HELP, "lang": LANG_HELP})
@operator_errors
def sign_subordinate(c: Context, ca: str, csr: str, env: str | None = None, definition: str | None = None,
                     out: str | None = None, issuer_cert: str | None = None, pin_file: str | None = None,
                     rehearsal: bool = False, answers: str | None = None, lang: str | None = None) -> None:
    """At the offline root: verify a subordinate's CSR and issue its CA certificate."""
    from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    report = preflight_or_stop(defn, "subordinate-signing", out_dir, rehearsal, lang, ca=ca, csr=csr,
                               issuer_cert=issuer_cert, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("subordinate-signing", defn, out_dir, rehearsal, answers, report, lang) as rec:
        sign_subordinate_ceremony(defn, ca, csr, out_dir, rec, rehearsal=rehearsal, issuer_cert_path=issuer_cert,
                                  pin_file=pin_file)
    show_summary("subordinate-signing", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca,
                 env=env, definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(help={**HELP, "of": "the sealed transcript of the recorded ceremony (OUT/transcripts/<ceremony>.jsonl)",
            "recording": "a video file of that ceremony (repeat --recording for each file)",
            "answers": ANSWERS_HELP, "lang": LANG_HELP}, iterable=["recording"])
@operator_errors
def addendum(c: Context, of: str, recording: list[str], env: str | None = None, definition: str | None = None,
             out: str | None = None, pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
             lang: str | None = None) -> None:
    """After a ceremony: bind its video recordings (SHA-256) to its transcript in a sealed addendum."""
    from ceremony.ceremonies.addendum import recording_addendum_ceremony
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    out_dir = _out(env, out, defn)
    report = preflight_or_stop(defn, "recording-addendum", out_dir, rehearsal, lang, pin_file=pin_file, recorded=of,
                               recordings=recording)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("recording-addendum", defn, out_dir, rehearsal, answers, report, lang) as rec:
        recording_addendum_ceremony(defn, of, recording, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)
    show_summary("recording-addendum", defn, out_dir, before, getattr(rec, "path", None), rehearsal, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(help={"out": "output directory (default out/rehearsal)",
            "definition": "PKI definition to rehearse (default inventory/testing/pki.yml)",
            "hsm": "PKCS#11 implementation of the throwaway tokens: softhsm (default) or nss (NSS softokn)"})
@operator_errors
def rehearse(c: Context, out: str = "out/rehearsal", definition: str | None = None, hsm: str = "softhsm") -> None:
    """Run every ceremony end to end on fresh SoftHSM (or NSS softokn) tokens under OUT, without prompts."""
    from ceremony.rehearsal.context import DEFAULT_DEFINITION
    from ceremony.rehearsal.run import run_rehearsal

    run_rehearsal(out, definition or DEFAULT_DEFINITION, hsm)


@task(help={"env": HELP["env"], "definition": HELP["definition"],
            "ceremony": "the ceremony to prepare: root-key-generation, subordinate-key-generation, "
                        "subordinate-signing, root-crl-batch, key-backup, key-restore, or another name of "
                        "ceremony/scripts",
            "ca": "the CA, for the subordinate, backup and life-cycle ceremonies (cross-certification: the issuing "
                  "root, <root> or, reversed, <root>.g<n>)", "csr": "the CSR to sign (subordinate-signing)",
            "issuer_cert": "the issuer's certificate (default OUT/<issuer>.crt.pem)", "out": HELP["out"],
            "pin_file": HELP["pin_file"], "rehearsal": "prepare a rehearsal (offline state not enforced)"})
@operator_errors
def preflight(c: Context, ceremony: str, env: str | None = None, definition: str | None = None, ca: str | None = None,
              csr: str | None = None, issuer_cert: str | None = None, out: str | None = None,
              pin_file: str | None = None, rehearsal: bool = False) -> None:
    """Check everything a ceremony needs (definition, offline, module, token, PIN, key label, CSR, outputs)
    without changing anything; exit 0 only when the ceremony can start. Every ceremony runs it first."""
    defn = _load(env, definition, rehearsal)
    preflight_or_stop(defn, ceremony, _out(env, out, defn), rehearsal, ca=ca, csr=csr, issuer_cert=issuer_cert,
                      pin_file=pin_file)
    print("pre-flight passed: the ceremony can start")


@task(help={"env": HELP["env"], "definition": HELP["definition"]})
@operator_errors
def check(c: Context, env: str | None = None, definition: str | None = None) -> None:
    """Validate a PKI definition without touching any HSM."""
    from ceremony.definition.model import load_definition

    defn = load_definition(_definition(env, definition))
    print(f"{defn.path}: valid (sha256 {defn.sha256})")
    for name, ca in defn.model.cas.items():
        print(f"  {name}: {ca.role}, {ca.key.describe()}, {ca.validity.not_before:%Y-%m-%d} to "
              f"{ca.validity.not_after:%Y-%m-%d}, {ca.hsm.token.describe()} key {ca.hsm.key_label!r}")
        if not Path(ca.hsm.module).is_file():
            # Not an error here (a definition is often checked away from the HSM), but never silence.
            print(f"    note: PKCS#11 module {ca.hsm.module} is not on this machine; it must be where the "
                  f"ceremony runs (invoke ceremony.preflight --env ENV --ceremony NAME checks it there)")


ns = Collection()
ns.add_task(root)
ns.add_task(subordinate_key)
ns.add_task(sign_subordinate)
ns.add_task(addendum)
ns.add_task(check)
ns.add_task(preflight)
