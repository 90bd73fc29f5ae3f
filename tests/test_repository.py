"""The repository's TLS check and layout, without hosts (roles/crl_publisher/filter_plugins/crl_publisher_tls.py).

The role refuses a TLS certificate that does not cover the host names of the definition's repository and
PDS URLs, is not valid now, is not for server authentication or does not match its key; these are the
messages it stops with. The layout (where the PDS goes, which names the certificate needs) is read from
the shipped definitions. The nginx site is rendered from the role's template and read as text: the CRL
and certificate locations of the plain-http server never redirect, everything else there does; the
https server allows TLS 1.2 and 1.3 only. ``tests/infra/test_repository.py`` checks the same on hosts.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import jinja2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "crl_publisher"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def load_filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crl_publisher_tls", ROLE / "filter_plugins" / "crl_publisher_tls.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tls = load_filters()


def pem_pair(names: list[str], *, days: tuple[int, int] = (-1, 90), eku: list[x509.ObjectIdentifier] | None = None,
             other_key: bool = False) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "no name")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW + dt.timedelta(days=days[0]))
               .not_valid_after(NOW + dt.timedelta(days=days[1])))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    served_key = ec.generate_private_key(ec.SECP256R1()) if other_key else key
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            served_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode())


def problems(cert: str, key: str, names: list[str]) -> list[str]:
    return tls.tls_problems(cert, key, names, "tls/repository.crt.pem", "tls/repository.key.pem", now=NOW)


def test_a_certificate_for_the_names_valid_now_with_its_key_passes() -> None:
    cert, key = pem_pair(["pki.test.scse.ml"], eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert problems(cert, key, ["pki.test.scse.ml"]) == []
    # A wildcard stands for one leftmost label (RFC 6125 6.4.3).
    cert, key = pem_pair(["*.scse.gouv.ml"])
    assert problems(cert, key, ["pki.scse.gouv.ml", "PKI.SCSE.GOUV.ML."]) == []


@pytest.mark.parametrize(("pattern", "name", "covered"), [
    ("pki.scse.gouv.ml", "pki.scse.gouv.ml", True),
    ("*.scse.gouv.ml", "pki.scse.gouv.ml", True),
    ("*.scse.gouv.ml", "a.pki.scse.gouv.ml", False),
    ("*.scse.gouv.ml", "scse.gouv.ml", False),
    ("*.gouv.ml", "pki.scse.gouv.ml", False),
    ("www.scse.gouv.ml", "pki.scse.gouv.ml", False),
])
def test_name_coverage(pattern: str, name: str, covered: bool) -> None:
    assert tls.name_covered(name, [pattern]) is covered


def test_a_certificate_not_covering_a_name_is_refused_naming_both() -> None:
    cert, key = pem_pair(["www.example.ml"])
    assert problems(cert, key, ["pki.test.scse.ml"]) == [
        "tls/repository.crt.pem does not cover pki.test.scse.ml in its subjectAltName (it covers www.example.ml); "
        "the repository and PDS URLs of the PKI definition use pki.test.scse.ml"]
    cert, key = pem_pair([])
    assert "(it covers no DNS name)" in problems(cert, key, ["pki.test.scse.ml"])[0]


def test_expired_not_yet_valid_client_only_and_foreign_key_are_refused() -> None:
    names = ["pki.test.scse.ml"]
    cert, key = pem_pair(names, days=(-100, -1))
    assert problems(cert, key, names) == ["tls/repository.crt.pem expired on 2026-12-05 12:00:00 UTC"]
    cert, key = pem_pair(names, days=(2, 90))
    assert problems(cert, key, names) == ["tls/repository.crt.pem is not valid before 2026-12-08 12:00:00 UTC"]
    cert, key = pem_pair(names, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert problems(cert, key, names) == ["tls/repository.crt.pem does not allow TLS server authentication (its "
                                          "extendedKeyUsage lacks serverAuth)"]
    cert, key = pem_pair(names, other_key=True)
    assert problems(cert, key, names) == ["tls/repository.key.pem is not the key of tls/repository.crt.pem (their "
                                          "public keys differ)"]


def test_unreadable_files_are_named_and_nothing_of_their_content_is_quoted() -> None:
    cert, key = pem_pair(["pki.test.scse.ml"])
    assert problems("not a certificate", key, ["pki.test.scse.ml"]) == [
        "tls/repository.crt.pem is not a PEM certificate (the server certificate first, then its chain)"]
    broken = key.replace(key.splitlines()[1], key.splitlines()[1][::-1])
    found = problems(cert, broken, ["pki.test.scse.ml"])
    assert len(found) == 1 and found[0].startswith("tls/repository.key.pem is not an unencrypted PEM private key")
    assert all(line not in found[0] for line in broken.splitlines()[1:-1])


@pytest.mark.parametrize("env", ["testing", "production.example"])
def test_the_layout_comes_from_the_definition(env: str) -> None:
    pki = yaml.safe_load((REPO / "inventory" / env / "pki.yml").read_text())
    urls = {p["qc_pds_url"] for ca in pki["cas"].values() for p in (ca.get("profiles") or {}).values()}
    documents = tls.pds_documents(pki)
    assert {d["url"] for d in documents} == urls and urls
    for d in documents:
        assert d["url"].endswith(d["path"]) and d["path"] == d["dir"] + d["file"] and d["file"].startswith("pds")
    names = tls.repository_names(pki)
    assert names == [re.match(r"https?://([^/:]+)", pki["documents"]["repository_url"]).group(1)]  # type: ignore[union-attr]
    assert tls.repository_path(pki) == "/"
    missing = tls.missing_documents(documents, [], [], "/ctl/docs", pki["environment"])
    assert f"`ansible-playbook playbooks/docs.yml -e ceremony_env={pki['environment']}`" in missing[0]
    assert f"no /ctl/docs/{documents[0]['file']}; the suite renders no PDS" in missing[1]
    assert tls.missing_documents(documents, ["/ctl/docs/cp-1.0.fr.pdf"], [f"/ctl/docs/{d['file']}" for d in documents],
                                 "/ctl/docs", pki["environment"]) == []


def render_site(names: list[str]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["dirname"] = lambda path: str(Path(path).parent)  # Ansible's filter
    return env.get_template("pki.conf.j2").render(
        ansible_managed="Ansible managed", crl_publisher_server_name=names[0], crl_publisher_tls_names=names,
        crl_publisher_root="/var/www/pki", crl_publisher_listen="80", crl_publisher_tls_listen="443",
        crl_publisher_tls_dir="/etc/ceremony-publish/tls",
        crl_publisher_etag_map="/var/lib/ceremony-publish/etag/crl-etag.map")


def servers(text: str) -> list[str]:
    return ["server {" + part for part in text.split("\nserver {")[1:]]


def locations(server: str) -> dict[str, str]:
    return dict(re.findall(r"location ([^{]+?) \{(.*?)\n    \}", server, flags=re.DOTALL))


def test_the_site_keeps_crls_on_http_and_the_pages_on_https() -> None:
    plain, secure = servers(render_site(["pki.test.scse.ml"]))
    assert "listen 80 default_server;" in plain and "ssl" not in plain.split("location")[0]
    http = locations(plain)
    assert "return" not in http["/crl/"] and "return" not in http["/certs/"]
    assert "return 404" in http["/ocsp/"]
    assert "return 301 https://$pki_https_host$request_uri;" in http["/"]
    assert "listen 443 ssl default_server;" in secure
    assert re.findall(r"ssl_protocols ([^;]+);", secure) == ["TLSv1.2 TLSv1.3"]
    assert "ssl_certificate_key /etc/ceremony-publish/tls/repository.key.pem;" in secure
    https = locations(secure)
    assert "application/pkix-crl" in https["/crl/"] and "return" not in https["/"]


def test_a_redirect_never_takes_its_host_from_the_request_blindly() -> None:
    text = render_site(["pki.scse.gouv.ml", "pds.scse.gouv.ml"])
    mapping = re.search(r"map \$host \$pki_https_host \{(.*?)\n\}", text, flags=re.DOTALL)
    assert mapping
    assert mapping.group(1).split() == ["default", "pki.scse.gouv.ml;", "pki.scse.gouv.ml", "pki.scse.gouv.ml;",
                                        "pds.scse.gouv.ml", "pds.scse.gouv.ml;"]
