"""Filters of the crl_publisher role: the TLS certificate of the repository pages checked on the controller.

``crl_publisher_tls_problems(cert_pem, key_pem, names, cert_path, key_path)`` returns the reasons the
certificate and key the sysadmin provides cannot serve the repository over https: empty when they can.
The names come from the PKI definition (the host names of ``documents.repository_url`` and of every
profile's ``qc_pds_url``): the certificate must cover each of them in its subjectAltName (RFC 6125:
a wildcard stands for exactly one leftmost label), be valid now, allow TLS server authentication
when it has an extendedKeyUsage, and match the key. The messages name files, names and dates, never
key material. It runs before anything changes on the host: a refused certificate leaves nginx as it was.

``crl_publisher_pds_documents(pki)``, ``crl_publisher_repository_names(pki)`` and
``crl_publisher_repository_path(pki)`` read the repository's layout from the PKI definition;
``crl_publisher_missing_documents`` says which documents it names are not on the controller, and how to make them.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID


def name_covered(name: str, patterns: Iterable[str]) -> bool:
    """Whether a host name is covered by one of the certificate's DNS names (RFC 6125 §6.4.3, leftmost wildcard)."""
    name = name.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name:
            label, _, rest = name.partition(".")
            if label and rest == pattern[2:] and "*" not in rest + pattern[2:]:
                return True
    return False


def _public(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_problems(cert_pem: str, key_pem: str, names: Iterable[str], cert_path: str = "the certificate",
                 key_path: str = "the key", now: dt.datetime | None = None) -> list[str]:
    """Why this certificate and key cannot serve ``names`` over https; empty when they can."""
    names = [str(n) for n in names]
    try:
        cert = x509.load_pem_x509_certificates(str(cert_pem).encode("ascii"))[0]
    except (ValueError, UnicodeEncodeError, IndexError):
        return [f"{cert_path} is not a PEM certificate (the server certificate first, then its chain)"]
    problems: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(d) for d in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    missing = [n for n in names if not name_covered(n, dns)]
    if missing:
        problems.append(f"{cert_path} does not cover {', '.join(missing)} in its subjectAltName (it covers "
                        f"{', '.join(dns) if dns else 'no DNS name'}); the repository and PDS URLs of the PKI "
                        f"definition use {', '.join(names)}")
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        problems.append(f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if cert.not_valid_before_utc > now:
        problems.append(f"{cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            problems.append(f"{cert_path} does not allow TLS server authentication (its extendedKeyUsage lacks "
                            "serverAuth)")
    except x509.ExtensionNotFound:
        pass
    try:
        key = serialization.load_pem_private_key(str(key_pem).encode("ascii"), password=None)
    except Exception:  # never let an exception (and what it might quote) out
        problems.append(f"{key_path} is not an unencrypted PEM private key (nginx must read it at start; keep it "
                        "encrypted with ansible-vault on the controller instead)")
        return problems
    if _public(key.public_key()) != _public(cert.public_key()):
        problems.append(f"{key_path} is not the key of {cert_path} (their public keys differ)")
    return problems


def _profiles(pki: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, profile) for ca in (pki.get("cas") or {}).values()
            for name, profile in ((ca or {}).get("profiles") or {}).items()]


def pds_documents(pki: dict[str, Any]) -> list[dict[str, Any]]:
    """One item per PKI Disclosure Statement URL the certificates carry (qcStatements QcPDS, EN 319 412-5).

    ``path`` is the URL's path, served as it is; ``dir`` its directory (``path`` itself for a URL ending
    in ``/``, which gets an index); ``file`` the name to find among the documents on the controller
    (empty for a directory URL); ``lang`` the language the definition gives; ``profiles`` who names it.
    """
    found: dict[str, dict[str, Any]] = {}
    for name, profile in _profiles(pki):
        url = str(profile.get("qc_pds_url") or "")
        if not url:
            continue
        parts = urlsplit(url)
        path = parts.path or "/"
        item = found.setdefault(url, {
            "url": url, "host": parts.hostname or "", "path": path,
            "dir": path if path.endswith("/") else posixpath.dirname(path).rstrip("/") + "/",
            "file": "" if path.endswith("/") else posixpath.basename(path),
            "lang": str(profile.get("qc_pds_lang") or "en"), "profiles": []})
        item["profiles"].append(name)
    return sorted(found.values(), key=lambda item: item["url"])


def repository_names(pki: dict[str, Any]) -> list[str]:
    """The host names of the repository URL and of the PDS URLs: what the TLS certificate must cover."""
    names = [urlsplit(str(pki["documents"]["repository_url"])).hostname or ""]
    names += [item["host"] for item in pds_documents(pki)]
    return [n for i, n in enumerate(names) if n and n not in names[:i]]


def repository_path(pki: dict[str, Any]) -> str:
    """The repository URL's path, ending in ``/`` (its index.html lists what is published)."""
    path = urlsplit(str(pki["documents"]["repository_url"])).path or "/"
    return path if path.endswith("/") else path + "/"


def missing_documents(pds: list[dict[str, Any]], policy_files: list[str], pds_files: list[str], documents_dir: str,
                      environment: str) -> list[str]:
    """What the repository should serve and the controller does not have, each with the way to make it."""
    missing = []
    if not policy_files:
        missing.append(f"the CP and CPS: none in {documents_dir}; they are rendered on the controller by "
                       f"`ansible-playbook playbooks/docs.yml -e ceremony_env={environment}` (invoke docs.build --env "
                       f"{environment}) once the ceremonies made the certificates; then run playbooks/publish.yml "
                       "again")
    have = {posixpath.basename(str(f)) for f in pds_files}
    for item in pds:
        if (item["file"] and item["file"] not in have) or (not item["file"] and not have):
            wanted = item["file"] or "pds_<language>.pdf"
            missing.append(f"the PKI Disclosure Statement {item['url']} (language {item['lang']}, profiles "
                           f"{', '.join(item['profiles'])}): no {documents_dir}/{wanted}; the suite renders no PDS, "
                           "put the approved document there under that name")
    return missing


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"crl_publisher_tls_problems": tls_problems, "crl_publisher_pds_documents": pds_documents,
                "crl_publisher_repository_names": repository_names,
                "crl_publisher_repository_path": repository_path,
                "crl_publisher_missing_documents": missing_documents}
