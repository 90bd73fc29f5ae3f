#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module ca_ceremony: the ceremonies, run on the machine that holds the CA's token.

The offline root's ceremonies run on the root workstation itself; the subordinate key ceremony on
the subordinate CA host. Either way the same engine entry points as ``invoke ceremony.*`` run,
with the same transcript: a key made through Ansible has its record like one made at a terminal.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ca_ceremony
short_description: Run a CA ceremony (root key, subordinate signing or renewal or re-key, root CRLs, subordinate key)
description:
  - Calls the ceremony engine (C(ceremony.ceremonies.root_key.root_ceremony),
    C(ceremony.ceremonies.sign_subordinate.sign_subordinate_ceremony),
    C(ceremony.ceremonies.rekey.certify_rekey_ceremony),
    C(ceremony.ceremonies.renewal.renewal_ceremony),
    C(ceremony.ceremonies.root_crl.root_crl_batch_ceremony) or
    C(ceremony.ceremonies.subordinate_key.subordinate_key_ceremony)) with the PKI definition on the host.
  - The root's ceremonies run on the offline workstation itself (local or chroot connection), never
    across a network. V(subordinate-key) runs on the subordinate CA host, which holds its token.
  - A subordinate key already on its token with its public key in O(out) is not made again (no
    change). A key on the token without its ceremony's outputs in O(out) (made by hand, or before
    the suite kept transcripts for keys made through Ansible) is left alone with a warning that no
    transcript records its generation; a key that differs from the definition or from O(out) fails.
  - A ceremony whose outputs are already in O(out) and match the token's key (root) or the CSR's
    key (subordinate) is not run again (no change). Outputs are never overwritten.
  - V(certify-rekey) certifies the re-key CSR O(csr) (C(<ca>.g<n>.csr.pem), written at the subordinate's host
    by C(invoke ceremony.rekey-subordinate)) as generation n of O(ca)'s certificate; nothing changes when a
    certificate of O(ca) in O(out) already holds the CSR's key. A CSR whose file name says another generation
    than the root's next one (the CA host lacked a later certificate when it re-keyed) is refused.
  - V(renew-subordinate) re-certifies O(ca)'s current key (C(<ca>.g<n>.crt.pem)) when the definition asks for it,
    the same rule as C(invoke ceremony.renew-subordinate) - C(cas.<ca>.validity.not_after) later than the current
    generation's notAfter; otherwise nothing changes. The key ceremony's public key (C(<ca>.pub.pem), after a
    re-key C(<ca>.g<m>.pub.pem)) must be in O(out).
  - A root CRL batch runs when no pre-signed root CRL reaches further than one CRL interval from now
    (the definition's C(crl.interval) of the root); otherwise nothing changes.
  - Every ceremony that runs writes its hash-chained transcript, sealed by the root key inside the
    HSM, under C(<out>/transcripts/) and lists it in C(<out>/manifest.json). A rehearsal signs in
    generated rehearsal participants; a production ceremony needs O(answers), the sign-in sheet and
    confirmations as YAML (see docs/transcripts.md). The HTML/PDF reports are rendered afterwards
    with C(invoke audit.report).
  - Outside a rehearsal the engine refuses to start while a network interface other than loopback is up.
  - Must run with the interpreter of the suite's virtualenv.
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  definition:
    description: Path of the PKI definition on the host.
    type: path
    required: true
  action:
    description: V(root) generates the root key and self-signed certificate; V(sign-subordinate)
      issues the certificate of O(ca) from O(csr); V(root-crl-batch) pre-signs the root's batch of
      CRLs (C(crl.batch_count) of them, C(crl.interval) apart) into C(<out>/crl/); V(subordinate-key)
      generates the key of O(ca) inside its token and writes its CSR and public key into O(out);
      V(certify-rekey) certifies the re-key CSR O(csr) of O(ca); V(renew-subordinate) renews O(ca)'s certificate
      for the same key when the definition gives a later end.
    type: str
    choices: [root, sign-subordinate, certify-rekey, renew-subordinate, root-crl-batch, subordinate-key]
    required: true
  ca:
    description: The subordinate CA (for V(sign-subordinate), V(certify-rekey), V(renew-subordinate) and
      V(subordinate-key)).
    type: str
  csr:
    description: The subordinate's CSR on the host (for V(sign-subordinate), and the re-key's C(<ca>.g<n>.csr.pem)
      for V(certify-rekey)), e.g. from removable media.
    type: path
  out:
    description: The ceremony's output directory (the workspace).
    type: path
    required: true
  answers:
    description: YAML file on the host with the ceremony's sign-in (participants, roles, identity checks),
      bag serials and witness confirmations. Required outside a rehearsal.
    type: path
  rehearsal:
    description: Rehearsal (marked as such everywhere, offline check not enforced). Defaults to true
      unless the definition's C(environment) is C(production).
    type: bool
  softhsm_conf:
    description: SoftHSM2 configuration file, when the token is a SoftHSM2 token.
    type: path
  user_pin:
    description: The user PIN of the ceremony's token (the root's, or for V(subordinate-key) the subordinate's).
    type: str
  pin_file:
    description: A 0600 file on the host holding the user PIN.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Root key ceremony
  ca_ceremony:
    definition: /srv/ceremony/pki.yml
    action: root
    out: /srv/ceremony/out
    pin_file: /media/ceremony/root.pin
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
outputs:
  description: Paths of the files the ceremony wrote (or found), by name.
  returned: success, except check mode for a ceremony still to run
  type: dict
certificate_sha256:
  description: SHA-256 of the issued certificate (DER).
  returned: success, except check mode for a ceremony still to run
  type: str
spki_sha256:
  description: SHA-256 of the key's DER SubjectPublicKeyInfo (the fingerprint read aloud at the key ceremony).
  returned: success, except check mode for a ceremony still to run
  type: str
log:
  description: What the ceremony showed the room (steps, fingerprints to read aloud).
  returned: when the ceremony ran
  type: str
transcript:
  description: Path of the ceremony's transcript (JSON Lines), verified offline with C(invoke audit.verify).
  returned: when the ceremony ran
  type: str
crls:
  description: For V(root-crl-batch), the CRLs written (number, thisUpdate, nextUpdate, path).
  returned: when a root CRL batch ran
  type: list
  elements: dict
"""

import datetime
import io
import os
import re
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import (
    HSM_ARGUMENT_SPEC,
    fail_on_engine_error,
    load_ca,
    pin_source,
    prepare_environment,
    require_engine,
)

from ceremony.ca.generations import certificate_generations
from ceremony.ceremonies.rekey import REKEY_CERTIFY, certify_rekey_ceremony, rekey_csr_inputs
from ceremony.ceremonies.renewal import current_generation, renewal_ceremony, renewal_inputs
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony


def _cert(path: str):
    from cryptography import x509

    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def _done_root(module, ca, out: str, name: str) -> dict | None:
    """The existing root outputs, when they are there and belong to the token's key."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony.common.fingerprints import sha256_hex
    from ceremony.hsm import session as hsm
    from ceremony.hsm.keys import spki_sha256
    from ceremony.hsm.signers import public_key_from_token

    path = os.path.join(out, f"{name}.crt.pem")
    if not os.path.exists(path):
        return None
    cert = _cert(path)
    with hsm.open_session(ca.hsm, pin_source(module, ca.hsm), rw=False) as session:
        token_spki = spki_sha256(public_key_from_token(hsm.find_public_key(session, ca.hsm.key_label)))
    if spki_sha256(cert.public_key()) != token_spki:
        module.fail_json(msg=f"{path} exists but certifies another key than {ca.hsm.key_label!r} on the token; "
                             "refusing to run the ceremony over it")
    return {"outputs": {os.path.basename(path): path},
            "certificate_sha256": sha256_hex(cert.public_bytes(Encoding.DER))}


def _done_sub(module, out: str, name: str, csr_path: str) -> dict | None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony.common.fingerprints import sha256_hex
    from ceremony.hsm.keys import spki_sha256
    from ceremony.x509.csr import load_csr

    path = os.path.join(out, f"{name}.crt.pem")
    if not os.path.exists(path):
        return None
    cert = _cert(path)
    if spki_sha256(cert.public_key()) != spki_sha256(load_csr(csr_path).public_key()):
        module.fail_json(msg=f"{path} exists but certifies another key than the CSR {csr_path}; "
                             "refusing to overwrite it")
    return {"outputs": {os.path.basename(path): path},
            "certificate_sha256": sha256_hex(cert.public_bytes(Encoding.DER))}


def _done_subkey(module, ca, out: str, name: str) -> dict | None:
    """The subordinate key already on its token (checked against the definition and ``out``), or None."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from ceremony.common.errors import HsmError
    from ceremony.hsm import session as hsm
    from ceremony.hsm.keys import check_public_key, spki_sha256
    from ceremony.hsm.signers import public_key_from_token

    label = ca.hsm.key_label
    with hsm.open_session(ca.hsm, pin_source(module, ca.hsm), rw=False) as session:
        if not hsm.objects_with_label(session, label):
            return None
        public = public_key_from_token(hsm.find_public_key(session, label))
    try:
        check_public_key(public, ca.key)
    except HsmError as exc:
        module.fail_json(msg=f"cas.{name}.hsm.key_label {label!r} is already on the token but does not match the "
                             f"definition ({exc}); refusing to generate another key under that label")
    token_spki = spki_sha256(public)
    path = os.path.join(out, f"{name}.pub.pem")
    if not os.path.exists(path):
        module.warn(f"cas.{name}.hsm.key_label {label!r} is on the token (SPKI SHA-256 {token_spki}) but {path} is "
                    "not: the key was made outside a ceremony of the suite and no transcript records its "
                    "generation; left alone (record it as an exception, docs/transcripts.md)")
        return {"outputs": {}, "spki_sha256": token_spki}
    with open(path, "rb") as handle:
        written = spki_sha256(load_pem_public_key(handle.read()))
    if written != token_spki:
        module.fail_json(msg=f"{path} holds another public key (SPKI SHA-256 {written}) than {label!r} on the "
                             f"token ({token_spki}); refusing to run the key ceremony over it")
    return {"outputs": {os.path.basename(path): path}, "spki_sha256": token_spki}


SCRIPTS = {"root": "root-key-generation", "sign-subordinate": "subordinate-signing",
           "root-crl-batch": "root-crl-batch", "subordinate-key": "subordinate-key-generation",
           "certify-rekey": REKEY_CERTIFY, "renew-subordinate": "subordinate-renewal"}

#: ``<ca>.g<n>.csr.pem``: the re-key CSR's file name says the generation the subordinate's host made its key for.
_REKEY_CSR = re.compile(r"\.g(?P<n>[1-9][0-9]*)\.csr\.pem$")


def _certified(path: Path) -> dict:
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony.common.fingerprints import sha256_hex

    return {"outputs": {path.name: str(path)},
            "certificate_sha256": sha256_hex(_cert(str(path)).public_bytes(Encoding.DER))}


def _done_rekey(module, loaded, out: str, name: str, csr_path: str, rehearsal: bool) -> tuple[dict | None, str]:
    """(the certificate of ``name`` in ``out`` that already holds the CSR's key, or None; the file the
    certification writes). Everything the engine checks without the HSM is checked here, in check mode too, so that
    a refusal comes before anything changes and check mode predicts it."""
    from ceremony.hsm.keys import spki_sha256
    from ceremony.x509.csr import load_csr

    if not os.path.isfile(csr_path):
        if module.check_mode:  # brought in by an earlier task that check mode only predicted
            return None, f"{name}.g<n>.crt.pem"
        module.fail_json(msg=f"csr: {csr_path} does not exist; the re-key CSR <ca>.g<n>.csr.pem comes from the "
                             "subordinate's host (invoke ceremony.rekey-subordinate, then playbooks/subordinate_ca.yml "
                             "carries it to the exchange directory)")
    wanted = spki_sha256(load_csr(csr_path).public_key())
    for path in certificate_generations(Path(out), name).values():
        if spki_sha256(_cert(str(path)).public_key()) == wanted:
            return _certified(path), path.name
    plan, _, _, _ = rekey_csr_inputs(loaded, name, Path(out), csr_path, rehearsal)
    named = _REKEY_CSR.search(os.path.basename(csr_path))
    if named and int(named["n"]) != plan.generation:
        module.fail_json(msg=f"csr: {csr_path} is the re-key of generation {named['n']} of {name!r}, but the root's "
                             f"next generation of {name!r} is {plan.generation} (its certificates in {out}: "
                             f"{', '.join(p.name for p in certificate_generations(Path(out), name).values())}); the "
                             "subordinate's host made its key without every certificate of the CA: install them there "
                             "(playbooks/subordinate_ca.yml) and re-key again; nothing was done")
    return None, plan.name("crt.pem")


def _done_renewal(loaded, out: str, name: str) -> tuple[dict | None, str]:
    """(the current certificate when the definition asks for no renewal, or None; the file a renewal writes). The
    rule is the renewal's own: a renewal gives a later end than the current generation's."""
    ca = loaded.model.ca(name)
    n, path = current_generation(Path(out), name)
    if _cert(str(path)).not_valid_after_utc >= ca.validity.not_after:
        return _certified(path), path.name
    renewal_inputs(loaded, name, Path(out))  # the key ceremony's public key, the pin: refused before the HSM
    return None, f"{name}.g{n + 1}.crt.pem"


def _done_crl_batch(loaded, out: str) -> dict | None:
    """The pre-signed root CRLs, when the furthest one reaches beyond one CRL interval from now."""
    from cryptography import x509

    from ceremony.ceremonies.root_crl import CRL_DIR, crl_file_stem

    root = loaded.model.cas[loaded.model.root_name]
    crl_dir = os.path.join(out, CRL_DIR)
    if not os.path.isdir(crl_dir):
        return None
    stem = crl_file_stem(loaded)
    furthest = None
    for name in sorted(os.listdir(crl_dir)):
        if name.startswith(stem + "-") and name.endswith(".crl"):
            with open(os.path.join(crl_dir, name), "rb") as handle:
                crl = x509.load_der_x509_crl(handle.read())
            if furthest is None or crl.next_update_utc > furthest[0]:
                furthest = (crl.next_update_utc, os.path.join(crl_dir, name))
    now = datetime.datetime.now(datetime.UTC)
    if furthest is None or furthest[0] - now <= root.crl.interval_td:
        return None
    return {"outputs": {os.path.basename(furthest[1]): furthest[1]}}


def run(module: AnsibleModule) -> None:
    from ceremony.common.display import make_console
    from ceremony.common.errors import CeremonyError
    from ceremony.transcript.recording import recorded
    p = module.params
    action = p["action"]
    loaded, _ = load_ca(module, p["definition"], p["ca"] or loaded_root(module, p["definition"]))
    model = loaded.model
    rehearsal = p["rehearsal"] if p["rehearsal"] is not None else model.environment != "production"
    if action == "sign-subordinate" and not (p["ca"] and p["csr"]):
        module.fail_json(msg="action=sign-subordinate needs ca and csr")
    if action == "certify-rekey" and not (p["ca"] and p["csr"]):
        module.fail_json(msg="action=certify-rekey needs ca and csr (the re-key's <ca>.g<n>.csr.pem)")
    if action in ("subordinate-key", "renew-subordinate") and not p["ca"]:
        module.fail_json(msg=f"action={action} needs ca")
    if not rehearsal and not p["answers"]:
        module.fail_json(msg=f"answers: a production ceremony ({action}) run through Ansible needs the sign-in "
                             "sheet and confirmations as a YAML file on the host (see docs/transcripts.md); "
                             "nothing was done")
    root_name = model.root_name
    root = model.cas[root_name]
    name = p["ca"] if action in ("sign-subordinate", "subordinate-key", "certify-rekey", "renew-subordinate") \
        else root_name
    token_of = model.cas[name] if action == "subordinate-key" else root
    prepare_environment(module)
    pin_source(module, token_of.hsm)  # exports user_pin under the token's pin_env for the engine
    written = f"{name}.crt.pem"
    try:
        if action == "root":
            done = _done_root(module, root, p["out"], root_name)
        elif action == "sign-subordinate":
            done = _done_sub(module, p["out"], name, p["csr"])
        elif action == "subordinate-key":
            done = _done_subkey(module, token_of, p["out"], name)
        elif action == "certify-rekey":
            done, written = _done_rekey(module, loaded, p["out"], name, p["csr"], rehearsal)
        elif action == "renew-subordinate":
            done, written = _done_renewal(loaded, p["out"], name)
        else:
            done = _done_crl_batch(loaded, p["out"])
        produced = os.path.join(p["out"], {"root-crl-batch": "crl", "subordinate-key": f"{name}.pub.pem"}.get(
            action, written))
        after = {"ceremony": action, "ca": name, "output": produced}
        if done is not None:
            module.exit_json(changed=False, diff={"before": after, "after": after}, **done)
        diff = {"before": {"ceremony": action, "ca": name, "output": None}, "after": after}
        if module.check_mode:
            module.exit_json(changed=True, diff=diff)
        text = io.StringIO()
        console = make_console(file=text, width=120)
        answers = Path(p["answers"]) if p["answers"] else None
        with recorded(SCRIPTS[action], loaded, Path(p["out"]), rehearsal=rehearsal, answers=answers, console=console,
                      reports=False) as recorder:
            if action == "root":
                result = root_ceremony(loaded, p["out"], recorder, rehearsal=rehearsal,
                                       pin_file=p["pin_file"], interactive=False)
            elif action == "subordinate-key":
                result = subordinate_key_ceremony(loaded, name, p["out"], recorder, rehearsal=rehearsal,
                                                  pin_file=p["pin_file"], interactive=False)
            elif action == "sign-subordinate":
                result = sign_subordinate_ceremony(loaded, name, p["csr"], p["out"], recorder,
                                                   rehearsal=rehearsal, pin_file=p["pin_file"], interactive=False)
            elif action == "certify-rekey":
                result = certify_rekey_ceremony(loaded, name, p["out"], recorder, rehearsal=rehearsal,
                                                csr_path=p["csr"], pin_file=p["pin_file"], interactive=False)
            elif action == "renew-subordinate":
                result = renewal_ceremony(loaded, name, p["out"], recorder, rehearsal=rehearsal,
                                          pin_file=p["pin_file"], interactive=False)
            else:
                from ceremony.ceremonies.root_crl import root_crl_batch_ceremony

                batch = root_crl_batch_ceremony(loaded, p["out"], recorder, rehearsal=rehearsal,
                                                pin_file=p["pin_file"], interactive=False)
        transcript = str(recorder.path)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    if action == "root-crl-batch":
        crls = [{"number": c.number, "this_update": c.this_update.isoformat(), "next_update": c.next_update.isoformat(),
                 "path": str(c.der_path), "sha256": c.sha256} for c in batch.crls]
        module.exit_json(changed=True, diff=diff, crls=crls, outputs={os.path.basename(c["path"]): c["path"]
                                                                      for c in crls},
                         transcript=transcript, log=text.getvalue())
    module.exit_json(changed=True, diff=diff, outputs={k: str(v) for k, v in result.files.items()},
                     certificate_sha256=result.fingerprint_sha256, spki_sha256=result.key_spki_sha256,
                     transcript=transcript, log=text.getvalue())


def loaded_root(module, definition: str) -> str:
    from ceremony.common.errors import CeremonyError
    from ceremony.definition.model import load_definition

    try:
        return load_definition(definition).model.root_name
    except CeremonyError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    spec = dict(
        definition=dict(type="path", required=True),
        action=dict(type="str", choices=["root", "sign-subordinate", "certify-rekey", "renew-subordinate",
                                         "root-crl-batch", "subordinate-key"], required=True),
        answers=dict(type="path"),
        ca=dict(type="str"),
        csr=dict(type="path"),
        out=dict(type="path", required=True),
        rehearsal=dict(type="bool"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
