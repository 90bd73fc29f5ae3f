"""Rehearsal stage: the life of the hierarchy after its first year (issue 18, docs/lifecycle.md).

Runs after the CRL, OCSP and key backup stages, before the CP/CPS (which list every ceremony held). On the first
subordinate CA with end-entity profiles, in the order an operator holds them, each ceremony with its numbered
transcript:

1. sealing-key certification, when a restore left a subordinate's sealing-key CSR uncertified (the rehearsal's
   restore is the root's, whose restored key certifies its sealing key at once: then there is nothing to certify,
   and the stage says so);
2. renewal, same key (``subordinate-renewal``): a definition copy with a later ``validity.not_after``;
3. re-key (``subordinate-rekey`` at the subordinate's host, ``subordinate-rekey-certification`` at the root);
4. issuance under the new key, one certificate per profile, the first revoked (keyCompromise); one certificate of
   the first key revoked too (superseded: its subscriber moves to the new key), so that the CRL job signs, in the
   same run, a CRL with each key, each at its own URL and number sequence. OCSP follows: the first key's job again,
   and for the new key its delegated signer (signer ceremony), its store and its job. Then every end-entity
   certificate of the rehearsal is checked with ``openssl verify -crl_check_all`` against the CRL its distribution
   point names (each key's own) and with GnuTLS ``certtool --verify-chain``: the rehearsal fails on any mismatch;
5. root rollover: a definition copy adds ``cas.<root>.successor``. On SoftHSM the successor has a token of its own,
   initialised at the token initialisation ceremony with the user PIN split between the Crypto Officers (their
   parts held by this process, ``pins.hold_parts``, and listed in the rehearsal's PIN file); its key ceremony takes
   the sealing key the token was born with, and the Crypto Officers then change their parts of its split user PIN at
   the split-PIN change ceremony (``pin-change``; the new parts held and listed in the PIN file in place of the old),
   so that the reverse cross-certification, which signs with the successor's key, logs in with the new parts. On NSS
   softokn (no C_InitToken for a new token) it sits on the root's token under labels of its own, its PIN whole: no
   PIN change. Then the cross-certification both ways, and both cross-signed chains are checked
   (an end-entity certificate of the new key from the successor's anchor through the reverse cross-certificate, the
   successor's sealing certificate from the old root through the forward one);
6. last, destruction of the OLD subordinate key (key generation 1). Its certificates are still valid, and it keeps
   signing CRLs for what it issued until they expire: destroying it now ends those CRLs, so the ceremony refuses
   unless the definition records the decision. The rehearsal records it (``cas.<ca>.destruction`` with that key's
   SPKI SHA-256) in its definition copy, kept as ``pki.<hash>.yml``, and all CRL checks are made BEFORE.

Definition copies are written as ``OUT/pki.<hash>.yml``, the name under which each ceremony keeps the definition it
used (ceremony.ceremonies.steps.keep_definition), and loaded from there: each transcript names that file.
Manifest kinds the stage adds itself: ``end-entity-certificate``/``end-entity-csr`` as the CRL stage,
``subordinate-crl`` and ``crl-partition`` with ``generation`` (the key generation that signed them); the
ceremonies add theirs (``subordinate-certificate`` with ``generation``/``key``, ``subordinate-csr``,
``subordinate-public-key``, ``new-root-certificate``, ``new-root-public-key``, ``cross-certificate`` with
``subject``/``issuer``, ``token-initialisation-report``, ``sealing-public-key``, ``pin-change-report``,
``key-destruction-report``,
``pki-definition``, one ``transcript`` per ceremony).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ceremony.ca.generations import current_certificate_path, generation_stem, issuer_generations
from ceremony.ca.registry import Registry, default_path
from ceremony.ceremonies.destroy_key import destroy_key_ceremony
from ceremony.ceremonies.issuance import IssuedCertificate, issue_certificate, mark_revoked
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.ceremonies.pin_change import pin_change_ceremony
from ceremony.ceremonies.rekey import certify_rekey_ceremony, rekey_key_ceremony
from ceremony.ceremonies.renewal import renewal_ceremony
from ceremony.ceremonies.rollover import cross_certification_ceremony, new_root_ceremony
from ceremony.ceremonies.sealing_certification import pending_sealing_csrs, sealing_certification_ceremony
from ceremony.ceremonies.steps import definition_copy_name
from ceremony.ceremonies.token_init import token_init_ceremony
from ceremony.common import child_process
from ceremony.common.errors import VerificationError
from ceremony.common.fileio import write_new
from ceremony.crl.job import run_crl_job
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.ocsp.cli import create_store
from ceremony.ocsp.job import run_ocsp_job
from ceremony.rehearsal.context import RehearsalContext
from ceremony.rehearsal.crl import CRL_DIR, EE_DIR, REHEARSAL_PARTITIONS, subscriber_csr, with_crl_partitions
from ceremony.rehearsal.ocsp import OCSP_DIR
from ceremony.transcript.participants import REHEARSAL_OFFICERS
from ceremony.transcript.recorder import ConsoleRecorder

#: Where the stage writes the chain files it hands to ``certtool --verify-chain`` (kept: an auditor reruns them).
CHAINS_DIR = "lifecycle/chains"

#: How much later the renewal's certificate ends than generation 1's: a year, inside the root's validity.
RENEWAL_EXTENSION = dt.timedelta(days=365)


@dataclass(frozen=True)
class LifeCycleResult:
    """What the stage left, for its own checks and for the tests that read the rehearsal."""

    ca_name: str
    old_key_generation: int
    new_key_generation: int
    destroyed_spki_sha256: str
    seconds: float


def subordinate_of(ctx: RehearsalContext) -> str | None:
    """The CA whose life is rehearsed: the first subordinate with end-entity profiles (the one the CRL stage used)."""
    return next((name for name, ca in ctx.definition.model.cas.items() if ca.role == "subordinate" and ca.profiles),
                None)


def definition_copy(ctx: RehearsalContext, change: Callable[[dict[str, Any]], None]) -> LoadedDefinition:
    """The rehearsal's definition as the operator edits it for a later ceremony, written where the ceremony keeps the
    definition it used: ``OUT/pki.<hash>.yml`` (each transcript names that file and its hash)."""
    data = yaml.safe_load(ctx.definition.path.read_text(encoding="utf-8"))
    change(data)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")
    path = ctx.out / definition_copy_name(hashlib.sha256(body).hexdigest())
    if not path.exists():
        write_new(path, body)
    return load_definition(path)


def successor_data(root: dict[str, Any], token: dict[str, Any] | None) -> dict[str, Any]:
    """The successor root the rehearsal rolls over to: a name of its own, starting half a year after the root (the
    definition check wants a later start) and ending as much later, the reverse cross-certificate asked; on ``token``
    (an ``hsm`` section: a token of its own) or, when None, on the root's token under labels of its own."""
    validity = root["validity"]
    shift = dt.timedelta(days=182)
    subject = [{k: (f"{v} G2" if k == "CN" else v) for k, v in rdn.items()} for rdn in root["subject"]]
    publication = {k: v.replace(".crl", "-g2.crl").replace(".cer", "-g2.cer")
                   for k, v in root["publication"].items() if k in ("crl_url", "certificate_url")}
    hsm = {**copy.deepcopy(root["hsm"]), "key_label": root["hsm"]["key_label"] + "-g2", **(token or {})}
    return {"generation": 2, "subject": subject, "key": copy.deepcopy(root["key"]),
            "validity": {"not_before": _when(validity["not_before"]) + shift,
                         "not_after": _when(validity["not_after"]) + shift},
            "publication": publication, "hsm": hsm, "cross_certificate": {"reverse": True}}


def successor_token(root: dict[str, Any]) -> dict[str, Any]:
    """The successor's own token (SoftHSM): ``<root token label>-g2``, its PINs under variables of its own."""
    label = f"{root['hsm']['token']['label']}-g2"[:32]
    stem = "CEREMONY_" + label.upper().replace("-", "_")
    return {"token": {"label": label}, "pin_env": stem + "_PIN", "so_pin_env": stem + "_SO_PIN"}


def _when(value: Any) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def crl_file(ctx: RehearsalContext, cert: x509.Certificate) -> Path:
    """The published CRL (PEM) the certificate's distribution point names: the file of that URL's name under the
    CRL directory (``…/qualified.g3.crl`` → ``crl/qualified.g3.crl.pem``)."""
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = next(str(n.value) for dp in points for n in dp.full_name or [])
    return ctx.out / CRL_DIR / (Path(urlparse(url).path).name + ".pem")


def issuer_of(ctx: RehearsalContext, ca_name: str, cert: x509.Certificate) -> Path:
    """The CA certificate (latest generation first) whose key signed ``cert``."""
    for gen in reversed(issuer_generations(ctx.out, ca_name)):
        try:
            cert.verify_directly_issued_by(gen.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return gen.path
    raise VerificationError(f"no certificate of {ca_name!r} in {ctx.out} issued {cert.subject.rfc4514_string()}")


def root_crl_in_force(ctx: RehearsalContext) -> Path:
    """The root CRL of the batch in force now (the others of the batch start later)."""
    now = dt.datetime.now(dt.UTC)
    for entry in ctx.manifest.find("root-crl", format="pem"):
        crl = x509.load_pem_x509_crl((ctx.out / entry["path"]).read_bytes())
        if crl.last_update_utc <= now and (crl.next_update_utc is None or now < crl.next_update_utc):
            return ctx.out / entry["path"]
    raise VerificationError(f"{ctx.out / CRL_DIR}: no root CRL in force now; the CRL stage signs the batch")


def _run(args: list[str]) -> tuple[int, str]:
    done = child_process.run(args, capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


def check_end_entities(ctx: RehearsalContext, ca_name: str, root: str) -> int:
    """Every end-entity certificate of ``ca_name`` in the manifest: ``openssl verify -crl_check_all`` with its own
    key's CRL and the root CRL in force must say what the manifest's ``status`` says (revoked: *as revoked*), and
    ``certtool --verify-chain`` must accept its chain to the root. Returns how many were checked."""
    root_crl = root_crl_in_force(ctx)
    chains = ctx.out / CHAINS_DIR
    chains.mkdir(parents=True, exist_ok=True)
    checked = 0
    for entry in ctx.manifest.find("end-entity-certificate", format="pem"):
        path = ctx.out / entry["path"]
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        issuer = issuer_of(ctx, ca_name, cert)
        crl = crl_file(ctx, cert)
        code, output = _run(["openssl", "verify", "-crl_check_all", "-CAfile", str(ctx.out / f"{root}.crt.pem"),
                             "-untrusted", str(issuer), "-CRLfile", str(crl), "-CRLfile", str(root_crl), str(path)])
        expected = entry.get("status", "good")
        ok = code == 0 if expected == "good" else (code != 0 and "certificate revoked" in output)
        chain = chains / f"{path.name.removesuffix('.crt.pem').removesuffix('.pem')}.chain.pem"
        chain.write_bytes(path.read_bytes() + issuer.read_bytes() + (ctx.out / f"{root}.crt.pem").read_bytes())
        gnutls, gnutls_out = _run(["certtool", "--verify-chain", "--infile", str(chain)])
        ctx.console.print(f"  {path.name} (under {issuer.name}): openssl with {crl.name}: "
                          f"{'OK' if code == 0 else 'revoked' if 'certificate revoked' in output else output} "
                          f"(expected {expected}); certtool --verify-chain: {'OK' if gnutls == 0 else gnutls_out}",
                          markup=False, emoji=False)
        if not ok:
            raise VerificationError(f"openssl verify -crl_check_all does not treat {path} as {expected} with {crl}: "
                                    f"{output}")
        if gnutls != 0:
            raise VerificationError(f"certtool --verify-chain refuses the chain of {path}: {gnutls_out}")
        checked += 1
    return checked


def check_cross_chains(ctx: RehearsalContext, root: str, ee: Path, sub: Path) -> None:
    """Both cross-signed chains: ``ee`` (under the old root's hierarchy) from the successor's anchor through the
    reverse cross-certificate, and the successor's sealing certificate from the old root through the forward one;
    openssl and GnuTLS each."""
    old, new = ctx.out / f"{root}.crt.pem", ctx.out / f"{root}.g2.crt.pem"
    forward, reverse = ctx.out / f"{root}.g2.by-g1.crt.pem", ctx.out / f"{root}.g1.by-g2.crt.pem"
    seal = ctx.out / f"{root}.g2.seal.crt.pem"
    chains = ctx.out / CHAINS_DIR
    untrusted = chains / "reverse-untrusted.pem"
    untrusted.write_bytes(sub.read_bytes() + reverse.read_bytes())
    for anchor, between, leaf, name in ((new, untrusted, ee, "ee-from-successor"),
                                        (old, forward, seal, "successor-seal-from-old-root")):
        code, output = _run(["openssl", "verify", "-x509_strict", "-purpose", "any", "-CAfile", str(anchor),
                             "-untrusted", str(between), str(leaf)])
        chain = chains / f"{name}.chain.pem"
        chain.write_bytes(leaf.read_bytes() + between.read_bytes() + anchor.read_bytes())
        gnutls, gnutls_out = _run(["certtool", "--verify-chain", "--infile", str(chain)])
        ctx.console.print(f"  {leaf.name} from {anchor.name} through {between.name}: openssl "
                          f"{'OK' if code == 0 else output}; certtool {'OK' if gnutls == 0 else gnutls_out}",
                          markup=False, emoji=False)
        if code != 0 or gnutls != 0:
            raise VerificationError(f"the cross-signed chain of {leaf} from {anchor} does not verify: {output} "
                                    f"{gnutls_out}")


def ocsp_after_rekey(ctx: RehearsalContext, defn: LoadedDefinition, ca_name: str, old_key: int, new_key: int) -> None:
    """OCSP after the re-key (docs/ocsp.md, "After a subordinate re-key"): the first key's store gets the new
    revocation from its job (its delegated signer, not the CA key, signs: it answers after the CA key is destroyed);
    the new key gets its own delegated signer at the signer ceremony, its own store and its first job run."""
    registry = default_path(ctx.out, ca_name)
    old_cert = next(g.path for g in issuer_generations(ctx.out, ca_name) if g.generation == old_key)
    first_store = ctx.out / OCSP_DIR / f"{ca_name}.sqlite3"
    first = run_ocsp_job(defn, ca_name, registry, first_store, ceremony_out=ctx.out, ca_cert=old_cert,
                         say=ctx.console.print)
    ctx.manifest.add("ocsp-store", first_store, "sqlite3", ca=ca_name)  # its new responses: listed as it is now
    with ctx.recorder("ocsp-signer-certification", definition=defn) as rec:
        signer = ocsp_signer_ceremony(defn, ca_name, ctx.out, rec, rehearsal=True, interactive=False)
    new_cert = current_certificate_path(ctx.out, ca_name)
    store = create_store(defn.path, ca_name, ctx.out / OCSP_DIR / f"{generation_stem(ca_name, new_key)}.sqlite3",
                         ctx.out, ca_cert=new_cert)
    second = run_ocsp_job(defn, ca_name, registry, store, ceremony_out=ctx.out, ca_cert=new_cert,
                          say=ctx.console.print)
    ctx.manifest.add("ocsp-store", store, "sqlite3", ca=ca_name, key_generation=new_key)
    ctx.console.print(f"  OCSP: key generation {old_key}'s store {first.signed} response(s) signed; key generation "
                      f"{new_key}: signer {second.signer.name} (generation {signer.generation}) certified, "
                      f"store {store.name}, {second.signed} response(s) signed", markup=False, emoji=False)


def rehearse(ctx: RehearsalContext) -> LifeCycleResult | None:
    started = time.monotonic()
    ca_name = subordinate_of(ctx)
    if ca_name is None:
        ctx.console.print("no subordinate CA with end-entity profiles: no life cycle to rehearse", style="yellow")
        return None
    model = ctx.definition.model
    root = model.root_name
    ca = model.cas[ca_name]
    # 1. sealing keys a restore left uncertified
    for name, other in model.cas.items():
        if other.role == "subordinate" and pending_sealing_csrs(ctx.out, name):
            with ctx.recorder("sealing-certification") as rec:
                sealing_certification_ceremony(ctx.definition, name, ctx.out, rec, rehearsal=True,
                                               interactive=False)
    if not any(pending_sealing_csrs(ctx.out, n) for n, o in model.cas.items() if o.role == "subordinate"):
        ctx.console.print("  every sealing key is certified (the rehearsal's restore is the root's, whose key "
                          "certified its new sealing key at once): no sealing-key certification to hold")

    # 2. renewal, same key: the operator extends the validity in the definition
    later_end = _when(ca.validity.not_after) + RENEWAL_EXTENSION

    def renew(data: dict[str, Any]) -> None:
        data["cas"][ca_name]["validity"]["not_after"] = later_end

    renewed = definition_copy(ctx, renew)
    with ctx.recorder("subordinate-renewal", definition=renewed) as rec:
        renewal = renewal_ceremony(renewed, ca_name, ctx.out, rec, rehearsal=True, interactive=False)
    ctx.console.print(f"  renewed: generation {renewal.generation} of {ca_name!r}, same key, until "
                      f"{later_end:%Y-%m-%d}")

    # 3. re-key
    old_key = issuer_generations(ctx.out, ca_name)[-1].key_generation
    with ctx.recorder("subordinate-rekey", definition=renewed) as rec:
        rekeyed = rekey_key_ceremony(renewed, ca_name, ctx.out, rec, rehearsal=True, interactive=False)
    with ctx.recorder("subordinate-rekey-certification", definition=renewed) as rec:
        certify_rekey_ceremony(renewed, ca_name, ctx.out, rec, rehearsal=True, interactive=False)
    new_key = rekeyed.generation
    ctx.console.print(f"  re-keyed: generation {new_key} of {ca_name!r} under key label {rekeyed.key_label!r}")

    # 4. issuance under the new key, revocations under both, the CRL job signing each key's CRLs, the checks
    partitioned = with_crl_partitions(renewed, ca_name, REHEARSAL_PARTITIONS)
    reg_path = default_path(ctx.out, ca_name)
    console_rec = ConsoleRecorder(rehearsal=True, console=ctx.console)
    with Registry.open(reg_path) as registry:
        made: list[IssuedCertificate] = []
        for profile_name, profile in ca.profiles.items():
            csr = subscriber_csr(ctx.out / EE_DIR / f"{profile_name}-g{new_key}.csr.pem", profile.kind)
            ctx.manifest.add("end-entity-csr", csr, "pem")
            made.append(issue_certificate(
                partitioned, ca_name, profile_name, csr, ctx.out / EE_DIR, registry, console_rec,
                issuer_cert_path=current_certificate_path(ctx.out, ca_name), rehearsal=True, interactive=False,
                manifest=ctx.manifest))
        registry.revoke(made[0].serial, "keyCompromise")
        mark_revoked(ctx.manifest, made[0].serial)
        moving = next(r for r in registry if r.issuer_generation == old_key and r.status == "good")
        registry.revoke(moving.serial, "superseded")
        mark_revoked(ctx.manifest, moving.serial)
    ctx.console.print(f"  issued {len(made)} certificates under key generation {new_key}, revoked "
                      f"{made[0].serial_hex} (keyCompromise); revoked {moving.serial:x} of key generation "
                      f"{old_key} (superseded)")
    ctx.manifest.add("registry", reg_path, "sqlite3", ca=ca_name)
    result = run_crl_job(partitioned, ca_name, reg_path, ctx.out / CRL_DIR, ceremony_out=ctx.out,
                         say=ctx.console.print)
    signed_by = sorted({c.generation for c in result.crls})
    if signed_by != sorted({old_key, new_key}):
        raise VerificationError(f"the CRL job signed with key generation(s) {signed_by}, not with both keys "
                                f"({old_key} and {new_key}): each key signs the CRLs of what it issued")
    for one in result.crls:
        kind, extra = (("subordinate-crl", {}) if one.partition is None
                       else ("crl-partition", {"partition": one.partition, "url": one.url}))
        for path, fmt in ((one.der_path, "der"), (one.pem_path, "pem")):
            ctx.manifest.add(kind, path, fmt, ca=ca_name, number=one.number, generation=one.generation,
                             this_update=one.this_update.isoformat(), next_update=one.next_update.isoformat(),
                             **extra)
    if ca.ocsp is not None:
        ocsp_after_rekey(ctx, renewed, ca_name, old_key, new_key)
    checked = check_end_entities(ctx, ca_name, root)
    ctx.console.print(f"  {checked} end-entity certificates of both keys verified, each with its own key's CRL")

    # 5. root rollover with cross-certificates. On SoftHSM the successor gets a token of its own, initialised at
    # the token initialisation ceremony with a split user PIN (the Crypto Officers' parts, held by this process): no
    # job reads the successor's PIN unattended, so nothing stops its split. Its key ceremony then takes the sealing
    # key the token was born with. (NSS softokn has no C_InitToken for a new token: the root's token there.)
    own = successor_token(yaml.safe_load(ctx.definition.path.read_text(encoding="utf-8"))["cas"][root]) \
        if ctx.hsm == "softhsm" else None

    def roll(data: dict[str, Any]) -> None:
        renew(data)
        data["cas"][root]["successor"] = successor_data(data["cas"][root], own)

    rolled = definition_copy(ctx, roll)
    stem, successor = rolled.model.successor_root() or ("", None)
    assert successor is not None
    if own is not None:
        quorum = rolled.model.ceremony.crypto_officer_quorum
        officers = [f"{name} (rehearsal)" for name in REHEARSAL_OFFICERS[:quorum]]
        ctx.hold_split_pin(str(successor.hsm.pin_env), str(successor.hsm.so_pin_env), officers)
        with ctx.recorder("token-initialisation", definition=rolled) as rec:
            init = token_init_ceremony(rolled, stem, ctx.out, rec, rehearsal=True, interactive=False)
        ctx.console.print(f"  token {init.label!r} initialised for {stem!r}: user PIN of {len(init.user_officers)} "
                          f"parts ({', '.join(init.user_officers)})", markup=False, emoji=False)
    with ctx.recorder("new-root-key-generation", definition=rolled) as rec:
        new_root_ceremony(rolled, ctx.out, rec, rehearsal=True, interactive=False)
    if own is not None:
        # The Crypto Officers change their parts of the successor's split user PIN (docs/lifecycle.md, "Changing a
        # split PIN"): sealed by the token's sealing key, which the successor's key ceremony just certified. The
        # reverse cross-certification below logs in on that token with the new parts.
        # What it adds to the stage, as wall time and as this process's CPU time (the first depends on how busy the
        # machine is; tests/test_rehearsal_lifecycle.py holds the second under 5 s).
        began, began_cpu = time.monotonic(), time.process_time()
        entries = ctx.hold_new_parts(str(successor.hsm.pin_env), officers)
        with ctx.recorder("pin-change", definition=rolled) as rec:
            changed = pin_change_ceremony(rolled, stem, ctx.out, rec, rehearsal=True, interactive=False)
        ctx.adopt_parts(str(successor.hsm.pin_env), entries)
        ctx.console.print(f"  token {changed.token!r}: user PIN changed, new parts of {', '.join(changed.officers)}; "
                          f"report {changed.report.relative_to(ctx.out)} (PIN change: "
                          f"{time.monotonic() - began:.1f} s, {time.process_time() - began_cpu:.1f} s CPU)",
                          markup=False, emoji=False)
    for reverse in (False, True):
        with ctx.recorder("cross-certification", definition=rolled) as rec:
            cross_certification_ceremony(rolled, ctx.out, rec, rehearsal=True, reverse=reverse, interactive=False)
    check_cross_chains(ctx, root, made[1].pem_path, current_certificate_path(ctx.out, ca_name))

    # 6. last: the old subordinate key, with the decision its valid certificates require recorded
    old_cert = next(g for g in issuer_generations(ctx.out, ca_name) if g.key_generation == old_key).cert
    digest = spki_sha256(old_cert.public_key())

    def decide(data: dict[str, Any]) -> None:
        roll(data)
        data["cas"][ca_name]["destruction"] = {
            "decision": "Décision de répétition n°1 : la clé de la génération 1 est retirée après le "
                        "renouvellement de clé (REHEARSAL)",
            "date": dt.datetime.now(dt.UTC).date(), "spki_sha256": digest}

    decided = definition_copy(ctx, decide)
    with ctx.recorder("key-destruction", definition=decided) as rec:
        destroyed = destroy_key_ceremony(decided, ca_name, ctx.out, rec, rehearsal=True, interactive=False,
                                         key_generation=old_key)
    ctx.console.print(f"  key generation {old_key} of {ca_name!r} ({destroyed.spki_sha256[:16]}…) destroyed on "
                      f"{', '.join(destroyed.tokens)}; report {destroyed.report.relative_to(ctx.out)}",
                      markup=False, emoji=False)
    seconds = time.monotonic() - started
    ctx.console.print(f"life-cycle stage: {seconds:.1f} s")
    return LifeCycleResult(ca_name, old_key, new_key, destroyed.spki_sha256, seconds)
