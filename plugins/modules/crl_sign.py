#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module crl_sign: a subordinate CA's CRL signed through its HSM and published, when one is due."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: crl_sign
short_description: Sign and publish a subordinate CA's CRL through its HSM when one is due
description:
  - Runs the suite's CRL job (C(ceremony.crl.job.run_crl_job)), the same code as the scheduled
    C(ceremony-crl-sign) command and C(invoke crl.sign), in the module's own Python process.
  - A CRL is signed only when one is due (no CRL published yet, the definition's C(crl.interval)
    elapsed, nextUpdate near, or the number of revocations in the registry changed), or with O(force).
    Otherwise nothing changes.
  - Like the scheduled job, every run (outside check mode) checks what signing needs, due or not
    the PIN source, the PKCS#11 module, the token, the login and the CA key, and fails with one
    message naming what is wrong. A PIN the token refuses sets the job's PIN latch; no later run
    (this module's or the timer's) tries the PIN until an operator clears it with
    C(ceremony-crl-sign --clear-pin-latch --ca CA --out OUT).
  - The job lints the CRL before and after the HSM signs it, checks it against the previously
    published CRL (number strictly greater, issuer unchanged, no unexpired entry dropped, thisUpdate
    not earlier), reserves the CRL number durably before signing, and replaces the DER and PEM files
    in O(out) atomically.
  - For the offline root, CRLs are signed in batches at a root ceremony (C(invoke crl.root-batch));
    this module refuses a root CA.
  - Must run with the interpreter of the suite's virtualenv.
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  definition:
    description: Path of the PKI definition on the managed host.
    type: path
    required: true
  ca:
    description: Name of the subordinate CA under C(cas) in the definition.
    type: str
    required: true
  registry:
    description: The CA's certificate registry (SQLite file).
    type: path
    required: true
  out:
    description: Publication directory; the CRL is written as the basename of the CA's C(crl_url)
      (DER) and the same name with C(.pem).
    type: path
    required: true
  ca_cert:
    description: The CA certificate. Default is C(<ca>.crt.pem) next to the definition, then
      C(/var/lib/ceremony/<ca>/<ca>.crt.pem).
    type: path
  force:
    description: Sign a new CRL even when the published one is current.
    type: bool
    default: false
  metrics_dir:
    description: When set, write C(ceremony_crl_<ca>.prom) there for node-exporter's textfile collector,
      exactly as the scheduled job does (on failure too, with the reason). Not in check mode.
    type: path
  softhsm_conf:
    description: SoftHSM2 configuration file, when the token is a SoftHSM2 token.
    type: path
  user_pin:
    description: The token's user PIN. Otherwise the environment variable named by the definition's
      C(pin_env), or O(pin_file).
    type: str
  pin_file:
    description: A 0600 file on the managed host holding the user PIN.
    type: path
attributes:
  check_mode:
    support: full
    details: Reports whether a CRL is due and why, without opening the token or writing a file
      (metrics included).
  diff_mode:
    support: full
    details: The CRL number, entry count and nextUpdate before and after.
"""

EXAMPLES = r"""
- name: Fresh CRL of the qualified CA
  crl_sign:
    definition: /etc/ceremony/pki.yml
    ca: qualified
    registry: /var/lib/ceremony/registry/registry.sqlite3
    out: /var/lib/ceremony/crl
    pin_file: /etc/ceremony/qualified.pin
    softhsm_conf: /etc/softhsm/softhsm2.conf
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
signed:
  description: Whether a new CRL was signed and published by this task.
  returned: always
  type: bool
reason:
  description: Why a CRL was (or would be) signed, or C(not due).
  returned: always
  type: str
number:
  description: The CRL Number of the published CRL after the task (the predicted one in check mode).
  returned: when a CRL is published or due
  type: int
entries:
  description: Revoked entries in the published CRL.
  returned: success, except check mode
  type: int
next_update:
  description: nextUpdate of the published CRL (ISO 8601, UTC).
  returned: success, except check mode
  type: str
path:
  description: The DER file in the publication directory.
  returned: success, except check mode
  type: str
"""

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


def state(summary) -> dict:
    """What the diff shows: the published CRL's number, entries and nextUpdate."""
    if summary is None:
        return {"published": False}
    return {"published": True, "number": summary.number, "entries": summary.entries,
            "next_update": summary.next_update.isoformat() if summary.next_update else None}


def run(module: AnsibleModule) -> None:
    import time

    from ceremony.common.errors import CeremonyError
    from ceremony.crl.job import due_reason, metrics_for, publication_names, run_crl_job

    p = module.params
    defn, ca = load_ca(module, p["definition"], p["ca"])
    prepare_environment(module)
    try:
        reason, before = due_reason(defn, p["ca"], p["registry"], p["out"], force=p["force"], ca_cert=p["ca_cert"])
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    predicted = {"published": True, "number": (before.number if before else 0) + 1}
    if module.check_mode:
        if reason is None:
            module.exit_json(changed=False, signed=False, reason="not due", number=before.number,
                             entries=before.entries, path=str(Path(p["out"]) / publication_names(ca)[0]),
                             next_update=before.next_update.isoformat() if before.next_update else None,
                             diff={"before": state(before), "after": state(before)})
        module.exit_json(changed=True, signed=True, reason=reason, number=predicted["number"],
                         diff={"before": state(before), "after": predicted})
    # The PIN reaches the engine through the environment variable the definition names (or the pin file).
    if p["user_pin"] and not ca.hsm.pin_env:
        module.fail_json(msg=f"{p['definition']}: cas.{p['ca']}.hsm.pin_env is not set, so user_pin cannot reach "
                             "the CRL job; set pin_env in the definition or use pin_file")
    source = pin_source(module, ca.hsm)
    der_path = Path(p["out"]) / publication_names(ca)[0]
    result = None
    start = time.monotonic()
    # The job runs even when no CRL is due: it checks the PIN source, module, token, login and key every time.
    try:
        result = run_crl_job(defn, p["ca"], p["registry"], p["out"], pin_file=source.file, ca_cert=p["ca_cert"],
                             force=p["force"])
    except CeremonyError as exc:
        if p["metrics_dir"]:
            _metrics(module, metrics_for(None, p["ca"], der_path, time.monotonic() - start, error=exc))
        fail_on_engine_error(module, exc)
    if p["metrics_dir"]:
        _metrics(module, metrics_for(result, p["ca"], result.der_path, time.monotonic() - start))
    after = {"published": True, "number": result.number, "entries": result.entries,
             "next_update": result.next_update.isoformat()}
    module.exit_json(changed=result.signed, signed=result.signed, reason=result.reason, number=result.number,
                     entries=result.entries, next_update=after["next_update"], path=str(result.der_path),
                     diff={"before": state(before), "after": after if result.signed else state(before)})


def _metrics(module: AnsibleModule, metrics) -> None:
    """The same textfile metrics as the scheduled job; a failure to write them is a warning only."""
    from ceremony.common.errors import CeremonyError
    from ceremony.crl.job import write_job_metrics

    try:
        write_job_metrics(module.params["metrics_dir"], metrics)
    except CeremonyError as exc:
        module.warn(str(exc))


def main() -> None:
    spec = dict(
        definition=dict(type="path", required=True),
        ca=dict(type="str", required=True),
        registry=dict(type="path", required=True),
        out=dict(type="path", required=True),
        ca_cert=dict(type="path"),
        force=dict(type="bool", default=False),
        metrics_dir=dict(type="path"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
