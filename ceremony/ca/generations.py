"""Issuer generations of a subordinate CA: which certificate, which key, which CRL (issue 18, re-key).

A subordinate CA's certificates are numbered: ``<ca>.crt.pem`` is generation 1, each renewal or re-key writes
``<ca>.g<n>.crt.pem``. A renewal keeps the key (``"key": "same"``), a re-key brings a new one (``"key": "new"``).
What a generation's key signed stays that key's to revoke: RFC 5280 6.3.3 wants a CRL signed by the key that
signed the certificate (or an indirect CRL, which this suite does not issue), so every key that still has
unexpired certificates keeps its own CRL, number sequence and URL.

A key is named by its *key generation*: the generation whose certificate first held it (1 for the key of the
subordinate key ceremony). The key of key generation ``m`` sits on the CA's token under ``<key_label>`` for
``m = 1`` and ``<key_label>.g<m>`` after a re-key; its CRL is at ``publication.crl_url`` for ``m = 1`` and at the
same URL with ``.g<m>`` before the file's extension otherwise (``qualified.crl`` → ``qualified.g2.crl``), its
certificate at ``certificate_url`` likewise. :func:`ca_for_generation` gives the CA as the definition describes it
with those labels and URLs, so that issuance, the CRL job and the OCSP job use them without knowing about
generations: a certificate's CRL distribution point, caIssuers and (partitioned) CRL URLs are the generation's.

Why the files, and not the definition, say which generations exist: the generations are facts made at ceremonies
(a certificate signed by the root), not wishes; the definition cannot name a key that was never generated.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509

from ceremony.common.errors import OutputError, RequestError
from ceremony.definition.model import CA
from ceremony.hsm.keys import spki_sha256
from ceremony.x509.files import read_certificate

_GENERATION = re.compile(r"\.g(?P<n>[0-9]+)\.crt\.pem$")


def certificate_generations(directory: Path, ca_name: str) -> dict[int, Path]:
    """The CA's certificates in ``directory`` by generation: ``<ca>.crt.pem`` is 1, ``<ca>.g<n>.crt.pem`` is n."""
    found: dict[int, Path] = {}
    directory = Path(directory)
    if (directory / f"{ca_name}.crt.pem").is_file():
        found[1] = directory / f"{ca_name}.crt.pem"
    for path in directory.glob(f"{ca_name}.g*.crt.pem"):
        match = _GENERATION.search(path.name)
        if match and path.name == f"{ca_name}.g{int(match['n'])}.crt.pem" and int(match["n"]) >= 2:
            found[int(match["n"])] = path
    return dict(sorted(found.items()))


def key_label_for(base_label: str, key_generation: int) -> str:
    """The label of key generation ``key_generation`` on the CA's token: the definition's ``key_label`` for the
    first key, ``<key_label>.g<m>`` for the key a re-key generated at generation ``m``."""
    return base_label if key_generation == 1 else f"{base_label}.g{key_generation}"


def generation_url(url: str, key_generation: int) -> str:
    """``url`` for key generation ``m``: unchanged for 1, else ``.g<m>`` before the extension of its last path
    segment (``http://h/crl/qualified.crl`` → ``http://h/crl/qualified.g2.crl``), at its end without one."""
    if key_generation == 1:
        return url
    u = urlparse(url)
    head, _, last = u.path.rpartition("/")
    if not last or last in (".", "..") or u.query or u.fragment:
        raise OutputError(f"URL {url!r} must end with a file name (no query or fragment) to form the URL of key "
                          f"generation {key_generation} from it, e.g. http://pki.example/crl/qualified.crl")
    stem, dot, ext = last.rpartition(".")
    name = f"{stem}.g{key_generation}.{ext}" if dot and stem else f"{last}.g{key_generation}"
    return u._replace(path=f"{head}/{name}").geturl()


def ca_for_generation(ca: CA, key_generation: int) -> CA:
    """The CA as key generation ``key_generation`` acts: its key label, CRL URL and certificate URL (module docs).

    The sealing key and every other setting are the CA's own: a re-key replaces the CA key, not the token's
    transcript-sealing key (which signs no certificate and no CRL). The delegated OCSP signer of key generation m
    (certified by that key) has a label of its own: ``<key_label>.g<m>-ocsp``, or ``<ocsp.signer_label>.g<m>``
    when the definition names the signer's label; its responses are served at the generation's OCSP URL (``.g<m>``
    after the URL's last segment, as for the CRL), from a store of its own: a store and a responder are bound to
    one CA certificate."""
    if key_generation == 1:
        return ca
    hsm = ca.hsm.model_copy(update={"key_label": key_label_for(ca.hsm.key_label, key_generation),
                                    "seal_label": ca.hsm.sealing_label})
    publication = ca.publication.model_copy(update={
        "crl_url": generation_url(ca.publication.crl_url, key_generation),
        "certificate_url": generation_url(ca.publication.certificate_url, key_generation)})
    update: dict[str, object] = {"hsm": hsm, "publication": publication}
    if ca.ocsp is not None:
        ocsp: dict[str, object] = {"url": generation_url(ca.ocsp.url, key_generation)}
        if ca.ocsp.signer_label is not None:
            ocsp["signer_label"] = key_label_for(ca.ocsp.signer_label, key_generation)
        update["ocsp"] = ca.ocsp.model_copy(update=ocsp)
    return ca.model_copy(update=update)


def generation_stem(ca_name: str, key_generation: int) -> str:
    """The file stem of what belongs to key generation ``m``: ``<ca>`` for the first key, ``<ca>.g<m>`` after a
    re-key (its CRL number state, its OCSP signer's certificates ``<ca>.g<m>.ocsp.crt.pem``)."""
    return ca_name if key_generation == 1 else f"{ca_name}.g{key_generation}"


def key_of(directory: Path, ca_name: str, cert: x509.Certificate) -> tuple[int, tuple[int, ...] | None]:
    """The key generation of ``cert`` among the CA's certificates in ``directory`` and the issuer generations that
    key certified (None: the CA has had one key, every certificate of the registry is that key's). A certificate
    found under another name is the first key's."""
    gens = issuer_generations(directory, ca_name)
    found = generation_of(gens, cert)
    if found is None or len({g.key_generation for g in gens}) == 1:
        return 1 if found is None else found.key_generation, None
    return found.key_generation, tuple(g.generation for g in gens if g.key_generation == found.key_generation)


@dataclass(frozen=True)
class IssuerGeneration:
    """One certificate of the CA and the key it certifies."""

    generation: int
    key_generation: int
    """The generation whose certificate first held this key (1: the key of the subordinate key ceremony)."""
    path: Path
    cert: x509.Certificate
    spki_sha256: str

    @property
    def key(self) -> str:
        """``same`` or ``new``, as the manifest says it of ``subordinate-certificate`` entries."""
        return "new" if self.generation == self.key_generation and self.generation > 1 else "same"


def issuer_generations(directory: Path, ca_name: str) -> list[IssuerGeneration]:
    """Every generation of the CA's certificate in ``directory``, in order; refused when one is missing or does
    not parse (a gap means a file was lost: which key signed what could not be told)."""
    found = certificate_generations(directory, ca_name)
    if not found:
        return []
    n = max(found)
    if sorted(found) != list(range(1, n + 1)):
        raise OutputError(f"{directory}: the certificates of {ca_name!r} skip a generation "
                          f"({', '.join(p.name for p in found.values())}); restore the missing file first")
    result: list[IssuerGeneration] = []
    first_of: dict[str, int] = {}
    for generation, path in found.items():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise OutputError(f"{path}: not a readable PEM certificate ({exc}); generation {generation} of "
                              f"{ca_name!r}") from None
        digest = spki_sha256(cert.public_key())
        first_of.setdefault(digest, generation)
        result.append(IssuerGeneration(generation, first_of[digest], path, cert, digest))
    return result


@dataclass(frozen=True)
class KeyCertificates:
    """One key of the CA and its certificates: what a host runs per key (its OCSP signer, store, job, responder)."""

    ca: str
    key_generation: int
    first: Path
    """The certificate that first held the key (``<ca>.crt.pem`` or ``<ca>.g<m>.crt.pem``): the key's OCSP store is
    bound to it, and the publishers' responder for the key answers with it as the issuer."""
    newest: Path
    """The latest certificate holding the key (a renewal re-certifies a key with a later validity): it bounds the
    validity of the OCSP signer certificate the key certifies, so the signer ceremony is run with it."""
    not_after: dt.datetime
    """The latest notAfter among the key's certificates: nothing the key issued is valid after it."""

    @property
    def stem(self) -> str:
        """``<ca>`` or ``<ca>.g<m>``: the file and unit names of what belongs to the key."""
        return generation_stem(self.ca, self.key_generation)


def keys_of_ca(directory: Path, ca_name: str) -> list[KeyCertificates]:
    """Every key of the CA, in order, from its certificates in ``directory`` (:func:`issuer_generations`)."""
    keys: dict[int, KeyCertificates] = {}
    for g in issuer_generations(directory, ca_name):
        seen = keys.get(g.key_generation)
        end = g.cert.not_valid_after_utc
        keys[g.key_generation] = KeyCertificates(ca_name, g.key_generation, g.path, g.path, end) if seen is None \
            else KeyCertificates(ca_name, g.key_generation, seen.first, g.path, max(seen.not_after, end))
    return list(keys.values())


def generation_of(gens: list[IssuerGeneration], cert: x509.Certificate) -> IssuerGeneration | None:
    """The generation ``cert`` is among ``gens`` (the same certificate byte for byte), or None."""
    return next((g for g in gens if g.cert == cert), None)


def current_certificate_path(directory: Path, ca_name: str) -> Path:
    """The CA's latest certificate in ``directory`` (``<ca>.g<n>.crt.pem`` of the highest n), else
    ``<ca>.crt.pem`` (which the caller then finds missing or not)."""
    found = certificate_generations(directory, ca_name)
    return found[max(found)] if found else Path(directory) / f"{ca_name}.crt.pem"


def parse_key_generation(value: str | int | None) -> int | None:
    """``--key-generation`` as given on the command line: a whole number from 1, or None when not given."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise RequestError(f"--key-generation {value!r}: not a key generation (allowed: a whole number from 1, the "
                           "generation whose certificate first held the key)")
    return int(text)


def chosen_key(directory: Path, ca_name: str, key_generation: int | None,
               verb: str) -> tuple[int, str, list[tuple[Path, x509.Certificate]]]:
    """(key generation, SPKI SHA-256, the certificates of that key in ``directory``) of the key a ceremony is to
    ``verb`` (destroy, back up, restore): the one choice the key destruction, the key backup and the key restore share.

    A key is named by its key generation: the generation whose certificate first held it (its label on the token is
    ``<key_label>`` for 1, ``<key_label>.g<m>`` for a re-key's, :func:`key_label_for`). A CA that has had one key
    needs no number. A re-keyed CA holds several keys, and handling the wrong one (destroying it, or backing up a key
    other than the one the custodians think they guard) is not something to guess at, so the key generation must
    then be named (``--key-generation``): never a guess, never "the latest"."""
    found = certificate_generations(directory, ca_name)
    if not found:
        raise RequestError(f"{Path(directory) / f'{ca_name}.crt.pem'}: no certificate of {ca_name!r} here; the key to "
                           f"{verb} is named by its certificates (give the CA's output directory with --out)")
    certs = [(n, p, read_certificate(p, f"the certificate of {ca_name!r}")) for n, p in found.items()]
    # A root's later generation may be its successor (root rollover, <root>.g<n>.crt.pem): another name and another
    # key, a CA of its own. The CA's certificates are those under the name of its first generation.
    certs = [(n, p, c) for n, p, c in certs if c.subject == certs[0][2].subject]
    first_of: dict[str, int] = {}
    for n, _, c in certs:
        first_of.setdefault(spki_sha256(c.public_key()), n)
    keys = {n: digest for digest, n in first_of.items()}
    allowed = ", ".join(str(n) for n in sorted(keys))
    if key_generation is None:
        if len(keys) > 1:
            raise RequestError(f"{ca_name!r} has had {len(keys)} keys (key generations {allowed}, re-keyed): name the "
                               f"one to {verb} with --key-generation (allowed: {allowed})")
        key_generation = next(iter(keys))
    if key_generation not in keys:
        renewed = next((first_of[spki_sha256(c.public_key())] for n, _, c in certs if n == key_generation), None)
        why = (f"generation {key_generation} renewed the key of generation {renewed}" if renewed is not None
               else f"{ca_name!r} has no certificate of generation {key_generation} in {directory}")
        raise RequestError(f"--key-generation {key_generation}: not a key generation of {ca_name!r} ({why}); "
                           f"allowed: {allowed}")
    digest = keys[key_generation]
    return key_generation, digest, [(p, c) for _, p, c in certs if spki_sha256(c.public_key()) == digest]
