"""Filter of the crl_publisher role: every issuer generation's certificate of the CAs, found on the controller.

After ``invoke ceremony.rekey-subordinate`` and ``ceremony.certify-rekey`` (or a renewal) the exchange directory holds,
beside ``<ca>.crt.pem`` (generation 1), ``<ca>.g<n>.crt.pem`` for every later generation (docs/lifecycle.md,
"Re-key"). The publisher needs them all: ``ceremony-crl-publish`` verifies the CRLs of key generation m
(``<stem>.g<m>.crl``) under that key's certificate, which it looks for beside ``<ca>.crt.pem`` in the trust
directory, and ``/certs/`` serves each key's certificate at its generation's certificate URL (the caIssuers of the
certificates that key issued).

``crl_publisher_generations(ca_certificates, certificate_names)`` takes the role's two inputs (CA name → its
``<ca>.crt.pem`` on the controller; CA name → the file name of its ``certificate_url``) and returns

* ``certificates``: ``<ca>.g<n>`` → ``<ca>.g<n>.crt.pem`` on the controller, for every later generation found next
  to the CA's first certificate (installed as ``<ca>.g<n>.crt.pem`` in the trust directory, the names the suite's
  ``issuer_generations`` reads);
* ``names``: what ``/certs/`` serves: ``<ca>`` or ``<ca>.g<n>`` → the served file name. Key generation m's URL is the
  ``certificate_url``'s name with ``.g<m>`` before its extension (as ``ceremony.ca.generations.generation_url`` forms
  it, and as issuance writes it in caIssuers); it serves the newest certificate that holds key m (a renewal
  re-certifies the same key with a later validity; either certificate verifies what the key signed).

With no later generation on the controller the result is the role's inputs unchanged: a no-op for a CA never
renewed or re-keyed. A generation file that cannot be read as a PEM certificate, or a gap in the numbering, fails
the run with one message naming the file: which key signed what could not be told.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

_GENERATION = re.compile(r"^(?P<ca>.+)\.g(?P<n>[1-9][0-9]*)\.crt\.pem$")


def generation_name(name: str, key_generation: int) -> str:
    """The file name of key generation m's URL: ``qualified.crt`` → ``qualified.g2.crt`` (unchanged for m = 1)."""
    if key_generation == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.g{key_generation}.{ext}" if dot and stem else f"{name}.g{key_generation}"


def _spki(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        raise AnsibleFilterError(f"{path}: not a readable PEM certificate ({exc})") from None
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def generations(ca_certificates: dict[str, str], certificate_names: dict[str, str]) -> dict[str, Any]:
    """See the module docstring."""
    certificates: dict[str, str] = {}
    names: dict[str, str] = {}
    for ca, first in sorted(ca_certificates.items()):
        directory = os.path.dirname(first) or "."
        found = {1: first}
        for entry in os.listdir(directory) if os.path.isdir(directory) else ():
            match = _GENERATION.match(entry)
            if match and match["ca"] == ca and int(match["n"]) >= 2:
                found[int(match["n"])] = os.path.join(directory, entry)
        if sorted(found) != list(range(1, len(found) + 1)):
            raise AnsibleFilterError(f"{directory}: the certificates of {ca!r} skip a generation "
                                     f"({', '.join(os.path.basename(p) for _, p in sorted(found.items()))}); "
                                     "restore the missing file first")
        for n, path in sorted(found.items()):
            if n > 1:
                certificates[f"{ca}.g{n}"] = path
        if ca not in certificate_names:
            continue
        if len(found) == 1:
            names[ca] = certificate_names[ca]
            continue
        key_generation: dict[bytes, int] = {}
        newest: dict[int, str] = {}
        for n, path in sorted(found.items()):
            m = key_generation.setdefault(_spki(path), n)
            newest[m] = ca if n == 1 else f"{ca}.g{n}"
        for m, stem in newest.items():
            names[stem] = generation_name(certificate_names[ca], m)
    for ca, name in certificate_names.items():
        if ca not in ca_certificates:
            names[ca] = name
    return {"certificates": {**ca_certificates, **certificates}, "names": names}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"crl_publisher_generations": generations}
