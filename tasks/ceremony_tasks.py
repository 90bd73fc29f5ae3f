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
    "env": "environment: reads inventory/ENV/pki.yml (default: production)",
    "definition": "path of the PKI definition (overrides --env)",
    "out": "output directory (default: out/ENV)",
    "pin_file": "read the PIN from this file (mode 0600) instead of the environment or a prompt",
    "rehearsal": "mark everything as a rehearsal (no offline enforcement, CN '(REHEARSAL)')",
}
ANSWERS_HELP = ("YAML file with the sign-in (participants, roles, identity checks), bag serials and confirmations "
                "instead of prompts (see docs/transcripts.md)")


def _definition(env: str, definition: str | None) -> Path:
    return Path(definition) if definition else Path("inventory") / env / "pki.yml"


@contextlib.contextmanager
def _record(script: str, defn: object, out: Path, rehearsal: bool, answers: str | None = None) -> Iterator[object]:
    """The ceremony's transcript in OUT/transcripts: sign-in and confirmations at the terminal, or from
    ``answers`` (YAML: participants, bag serials, confirmations); a rehearsal without answers uses
    generated rehearsal participants. Falls back to the console only if the transcript module is absent.
    """
    from ceremony.recorder import ConsoleRecorder

    try:
        from ceremony.transcript import open_transcript
    except ImportError:
        yield ConsoleRecorder(rehearsal=rehearsal)
        return
    rec = None
    try:
        with open_transcript(out / "transcripts", script, defn, rehearsal=rehearsal,
                             answers=Path(answers) if answers else None) as rec:
            yield rec
    finally:
        if rec is not None:  # list the transcript (even of a failed ceremony) and write its reports
            from ceremony.manifest import Manifest
            from ceremony.transcript_report import file_transcript

            try:
                file_transcript(rec.path, Manifest(out, rehearsal), script)
            except Exception as exc:  # never mask the ceremony's own outcome
                print(f"warning: {rec.path}: transcript not listed in the manifest or reports not written: {exc}")


@task(help={**HELP, "answers": ANSWERS_HELP})
@operator_errors
def root(c: Context, env: str = "production", definition: str | None = None, out: str | None = None,
         pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None) -> None:
    """Root key ceremony: generate the root key in its HSM and issue the self-signed root certificate."""
    from ceremony.ceremonies import root_ceremony
    from ceremony.definition import load_definition

    defn = load_definition(_definition(env, definition))
    out_dir = Path(out or f"out/{env}")
    with _record("root-key-generation", defn, out_dir, rehearsal, answers) as rec:
        root_ceremony(defn, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)


@task(name="subordinate-key", help={**HELP, "ca": "name of the subordinate CA in the definition",
                                    "answers": ANSWERS_HELP})
@operator_errors
def subordinate_key(c: Context, ca: str, env: str = "production", definition: str | None = None,
                    out: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
                    answers: str | None = None) -> None:
    """Generate a subordinate CA key on its own HSM and write its CSR (PEM and DER)."""
    from ceremony.ceremonies import subordinate_key_ceremony
    from ceremony.definition import load_definition

    defn = load_definition(_definition(env, definition))
    out_dir = Path(out or f"out/{env}")
    with _record("subordinate-key-generation", defn, out_dir, rehearsal, answers) as rec:
        subordinate_key_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, pin_file=pin_file)


@task(name="sign-subordinate", help={**HELP, "ca": "name of the subordinate CA in the definition",
                                     "csr": "the subordinate's CSR (PEM or DER), carried to the offline root",
                                     "issuer_cert": "the issuer's certificate (default: OUT/<issuer>.crt.pem)",
                                     "answers": ANSWERS_HELP})
@operator_errors
def sign_subordinate(c: Context, ca: str, csr: str, env: str = "production", definition: str | None = None,
                     out: str | None = None, issuer_cert: str | None = None, pin_file: str | None = None,
                     rehearsal: bool = False, answers: str | None = None) -> None:
    """At the offline root: verify a subordinate's CSR and issue its CA certificate."""
    from ceremony.ceremonies import sign_subordinate_ceremony
    from ceremony.definition import load_definition

    defn = load_definition(_definition(env, definition))
    out_dir = Path(out or f"out/{env}")
    with _record("subordinate-signing", defn, out_dir, rehearsal, answers) as rec:
        sign_subordinate_ceremony(defn, ca, csr, out_dir, rec, rehearsal=rehearsal, issuer_cert_path=issuer_cert,
                                  pin_file=pin_file)


@task(help={"out": "output directory (default out/rehearsal)",
            "definition": "PKI definition to rehearse (default inventory/testing/pki.yml)"})
@operator_errors
def rehearse(c: Context, out: str = "out/rehearsal", definition: str | None = None) -> None:
    """Run every ceremony end to end on fresh SoftHSM tokens under OUT, without prompts."""
    from ceremony.rehearsal import DEFAULT_DEFINITION, run_rehearsal

    run_rehearsal(out, definition or DEFAULT_DEFINITION)


@task(help={"env": HELP["env"], "definition": HELP["definition"]})
@operator_errors
def check(c: Context, env: str = "production", definition: str | None = None) -> None:
    """Validate a PKI definition without touching any HSM."""
    from ceremony.definition import load_definition

    defn = load_definition(_definition(env, definition))
    print(f"{defn.path}: valid (sha256 {defn.sha256})")
    for name, ca in defn.model.cas.items():
        print(f"  {name}: {ca.role}, {ca.key.describe()}, {ca.validity.not_before:%Y-%m-%d} to "
              f"{ca.validity.not_after:%Y-%m-%d}, {ca.hsm.token.describe()} key {ca.hsm.key_label!r}")


ns = Collection()
ns.add_task(root)
ns.add_task(subordinate_key)
ns.add_task(sign_subordinate)
ns.add_task(check)
