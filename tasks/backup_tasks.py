"""Key backup and restore under M-of-N custody: ``invoke backup.create`` and ``invoke backup.restore``.

Thin: parse the arguments, pick the record keeper (the transcript when installed), call the engine.
PINs are never arguments: the Crypto Officer's and the Security Officer's come from the variables
the definition names, from 0600 files (``--pin-file``, ``--so-pin-file``) or from prompts. Share
values are never arguments either: they are read from the custodians' share files.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors
from .ceremony_tasks import ANSWERS_HELP, HELP, LANG_HELP, _load, _out, _record, preflight_or_stop

KEY_GENERATION_HELP = ("which key of a re-keyed CA: the generation whose certificate first held it (1: the key of the "
                       "key ceremony, n: the re-key's <key_label>.g<n>); required once the CA has had two keys, as "
                       "for ceremony.destroy-key")


def _for_key(defn: object, ca: str, generation: int) -> object:
    """The definition as the pre-flight must read it: the CA as key generation ``generation`` acts (its key's own
    label on the token), so that it looks for the key the ceremony will handle."""
    from ceremony.ca.generations import ca_for_generation
    from ceremony.definition.model import LoadedDefinition

    model = defn.model  # type: ignore[attr-defined]
    cas = {**model.cas, ca: ca_for_generation(model.ca(ca), generation)}
    return LoadedDefinition(model.model_copy(update={"cas": cas}), defn.path, defn.sha256)  # type: ignore


def _bags(pairs: list[str]) -> dict[str, str]:
    from ceremony.common.errors import DefinitionError

    bags: dict[str, str] = {}
    for pair in pairs:
        name, sep, serial = pair.partition("=")
        if not sep or not name.strip() or not serial.strip():
            raise DefinitionError("--bag", pair, "not of the form NAME=SERIAL", "--bag 'Aminata Diarra=SN-000123'")
        if name.strip() in bags:
            raise DefinitionError("--bag", name.strip(), "given twice")
        bags[name.strip()] = serial.strip()
    return bags


@task(iterable=["bag"], help={
    **HELP, "ca": "name of the CA whose key is backed up",
    "certificate": "the CA's certificate (default: OUT/<ca>.crt.pem); the key must be its key",
    "bag": "'CUSTODIAN=BAG-SERIAL', once per custodian: the tamper-evident bag each share is sealed in",
    "so_pin_file": "read the Security Officer PIN from this file (mode 0600)",
    "key_generation": KEY_GENERATION_HELP, "answers": ANSWERS_HELP, "lang": LANG_HELP,
})
@operator_errors
def create(c: Context, ca: str, env: str | None = None, definition: str | None = None, out: str | None = None,
           certificate: str | None = None, bag: list[str] | None = None, pin_file: str | None = None,
           so_pin_file: str | None = None, rehearsal: bool = False, answers: str | None = None,
           lang: str | None = None, key_generation: str | None = None) -> None:
    """Back up a CA key: trusted AES-256 wrapping key, RFC 5649 wrap, Shamir M-of-N shares (OUT/backup/)."""
    from ceremony.ca.generations import parse_key_generation
    from ceremony.ceremonies.backup import backup_ceremony, chosen_certificate
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    defn.model.ca(ca)  # type: ignore[attr-defined]  # an unknown CA is refused before anyone signs in
    out_dir = _out(env, out, defn)
    bags = _bags(bag or [])
    wanted = parse_key_generation(key_generation)
    # which key: refused before anyone signs in when the CA has had several and none is named
    generation, _, _ = chosen_certificate(out_dir, ca, wanted, certificate, "back up")
    report = preflight_or_stop(_for_key(defn, ca, generation), "key-backup", out_dir, rehearsal, lang, ca=ca,
                               pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("key-backup", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = backup_ceremony(defn, ca, out_dir, rec, rehearsal=rehearsal, certificate=certificate, bags=bags,
                                 pin_file=pin_file, so_pin_file=so_pin_file, key_generation=wanted)
    print(f"backup {result.backup_id}: {result.backup_file}")
    for name, path in result.share_files.items():
        print(f"  share for {name} (bag {result.bags[name]}): {path}  <- print, seal, then delete this file")
    show_summary("key-backup", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


@task(iterable=["share"], help={
    **HELP, "ca": "name of the CA whose key is restored",
    "backup": "the backup file (<ca>.key-backup.json, <ca>.g<n>.key-backup.json for key generation n)",
    "share": "a custodian's share file; give --share once per custodian present (at least the threshold)",
    "certificate": "the CA's original certificate (default: OUT/<ca>.crt.pem); the test signature must verify "
                   "against it",
    "target_token": "label of the token to restore onto (default: the token the definition names); its user "
                    "PIN comes from the definition's pin_env, --pin-file or a prompt",
    "key_generation": KEY_GENERATION_HELP + "; restored under that key's own label",
    "answers": ANSWERS_HELP, "lang": LANG_HELP,
})
@operator_errors
def restore(c: Context, ca: str, backup: str, share: list[str] | None = None, env: str | None = None,
            definition: str | None = None, out: str | None = None, certificate: str | None = None,
            target_token: str | None = None, pin_file: str | None = None, rehearsal: bool = False,
            answers: str | None = None, lang: str | None = None, key_generation: str | None = None) -> None:
    """Restore a CA key from its backup and a quorum of shares onto a fresh token; prove it signs."""
    from ceremony.backup.format import BackupError
    from ceremony.ca.generations import parse_key_generation
    from ceremony.ceremonies.backup import chosen_certificate
    from ceremony.ceremonies.restore import restore_ceremony
    from ceremony.definition.model import TokenRef
    from ceremony.transcript.summary import manifest_snapshot, show_summary

    defn = _load(env, definition, rehearsal)
    defn.model.ca(ca)  # an unknown CA is refused before anyone signs in
    # Files that are not there are refused before the sign-in; what they contain is checked, and
    # recorded, inside the ceremony.
    for option, path in [("--backup", backup), *(("--share", s) for s in share or [])]:
        if not Path(path).is_file():
            raise BackupError(f"{option} {path}: no such file; nothing was done")
    out_dir = _out(env, out, defn)
    wanted = parse_key_generation(key_generation)
    generation, _, _ = chosen_certificate(out_dir, ca, wanted, certificate, "restore")  # before anyone signs in
    target = None
    if target_token:
        target = defn.model.ca(ca).hsm.model_copy(update={"token": TokenRef(label=target_token)})
    report = preflight_or_stop(_for_key(defn, ca, generation), "key-restore", out_dir, rehearsal, lang, ca=ca,
                               target_token=target_token, pin_file=pin_file)
    before = manifest_snapshot(out_dir, rehearsal)
    with _record("key-restore", defn, out_dir, rehearsal, answers, report, lang) as rec:
        result = restore_ceremony(defn, ca, backup, share or [], out_dir, rec, rehearsal=rehearsal,
                                  certificate=certificate, target=target, pin_file=pin_file,
                                  key_generation=wanted)
    print(f"key of {ca!r} restored onto {result.target_token}; report {result.report}")
    show_summary("key-restore", defn, out_dir, before, getattr(rec, "path", None), rehearsal, ca=ca, env=env,
                 definition=definition, out=out, lang=getattr(rec, "lang", "en"))


ns = Collection()
ns.add_task(create)
ns.add_task(restore)
