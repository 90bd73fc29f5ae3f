"""Filter ``ceremony_ocsp_keys``: the OCSP responders a publisher runs, one per key of each CA (playbooks/publish.yml).

After a re-key a subordinate CA has two keys, and each answers OCSP for what it issued with the signer it certified,
from a store of its own (docs/ocsp.md, "After a subordinate re-key"). The certificates the ceremonies carried out
say which keys exist: the exchange directory holds ``<ca>.crt.pem`` (generation 1) and ``<ca>.g<n>.crt.pem`` for
each later generation; a generation whose public key no earlier one holds starts a key, its *key generation* m (a
renewal re-certifies a key and starts none). This is what ``ceremony.ca.generations.issuer_generations`` reads on
the CA host, where role ocsp_signer runs one signer, store and job per key; tests/test_ocsp_keys_filter.py checks
the two agree.

``ceremony_ocsp_keys(sources, exchange_dir)`` takes publish.yml's items, one per CA with an ``ocsp`` section
(``ca``, ``host``, ``url``, ``hostname``, ``path``, ``port``), and returns one item per key: the first key's item
unchanged but for ``key_generation: 1``; key generation m >= 2 with ``url`` the OCSP URL with ``.g<m>`` after its
last segment (before an extension, as ``generation_url`` forms it and as issuance writes it in the AIA of what that
key issues), that URL's host name and path, and ``port`` the CA's plus 100 (m - 1): loopback ports that stay
the same for every CA and key when another key or CA is added (up to 100 CAs on a publisher).

Without a later generation in the exchange directory (or without the directory) the items come back as they came
(plus ``key_generation: 1``): nothing changes for a CA never re-keyed. A generation that cannot be read as a PEM
certificate, or a gap in the numbering, fails the run with one message naming the files.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

PORT_STEP = 100
_GENERATION = re.compile(r"^(?P<ca>.+)\.g(?P<n>[1-9][0-9]*)\.crt\.pem$")


def _spki(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        raise AnsibleFilterError(f"{path}: not a readable PEM certificate ({exc})") from None
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def key_generations(exchange_dir: str, ca: str) -> list[int]:
    """The key generations of ``ca`` from its certificates in ``exchange_dir`` ([1] when it holds only the first,
    or none)."""
    first = os.path.join(exchange_dir, f"{ca}.crt.pem")
    if not exchange_dir or not os.path.isfile(first):
        return [1]
    found = {1: first}
    for entry in os.listdir(exchange_dir):
        match = _GENERATION.match(entry)
        if match and match["ca"] == ca:
            found[int(match["n"])] = os.path.join(exchange_dir, entry)
    if sorted(found) != list(range(1, len(found) + 1)):
        raise AnsibleFilterError(f"{exchange_dir}: the certificates of {ca!r} skip a generation "
                                 f"({', '.join(os.path.basename(p) for _, p in sorted(found.items()))}); "
                                 "restore the missing file first")
    keys: dict[bytes, int] = {}
    for n, path in sorted(found.items()):
        keys.setdefault(_spki(path), n)
    return sorted(keys.values())


def generation_url(url: str, key_generation: int) -> str:
    """``url`` of key generation m: ``.g<m>`` before the extension of its last path segment, at its end without one
    (the same rule as ``ceremony.ca.generations.generation_url``)."""
    if key_generation == 1:
        return url
    parts = urlsplit(url)
    head, _, last = parts.path.rpartition("/")
    if not last or last in (".", "..") or parts.query or parts.fragment:
        raise AnsibleFilterError(f"URL {url!r} must end with a file name (no query or fragment) to form the URL of "
                                 f"key generation {key_generation} from it")
    stem, dot, ext = last.rpartition(".")
    name = f"{stem}.g{key_generation}.{ext}" if dot and stem else f"{last}.g{key_generation}"
    return parts._replace(path=f"{head}/{name}").geturl()


def ocsp_keys(sources: list[dict[str, Any]], exchange_dir: str) -> list[dict[str, Any]]:
    """See the module docstring."""
    result: list[dict[str, Any]] = []
    for source in sources:
        for m in key_generations(exchange_dir, str(source["ca"])):
            url = generation_url(str(source["url"]), m)
            parts = urlsplit(url)
            result.append({**source, "key_generation": m, "url": url, "hostname": parts.hostname,
                           "path": parts.path, "port": int(source["port"]) + PORT_STEP * (m - 1)})
    return result


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ceremony_ocsp_keys": ocsp_keys}
