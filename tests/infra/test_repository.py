"""The repository on the converged publishers (``conftest.converged``): https for its pages, http for the CRLs.

What a relying party sees from the client namespace, on both publishers, with the host names of the
PKI definition resolved to each publisher in turn (``curl --resolve``, ``openssl s_client -servername``):

* the PKI Disclosure Statement is served over https at the URL a real qualified certificate carries
  (read from its qcStatements QcPDS with cryptography and pyasn1, never written here), with an index
  at its directory and at the repository's URL; the CA certificate at the https form of the URL its
  authorityInfoAccess names;
* the TLS certificate validates against the test trust anchor for that name; TLS 1.1 is refused
  (offered by a client allowed to, so the server is what refuses); TLS 1.2 is accepted;
* the CRL at the certificate's cRLDistributionPoints URL over plain http, 200 and no redirect; the
  repository pages over http redirect to https;
* a certificate that does not cover the definition's host name makes publish.yml fail with one
  clear message before anything changes: nginx serves the certificate it served before.

The documents are the test's: a PDS file under the name of the certificate's URL, CP/CPS files named
as ``invoke docs.build`` names them (rendering the real ones takes minutes of PDF work and is
docs_tasks' concern); the role publishes whatever the controller's documents directory holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc3739

from .conftest import Lab, PlaybookRun

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
PUBLISHERS = ("publisher", "publisher2")
SUITE_PYTHON = "/opt/ceremony-suite/venv/bin/python"
QC_PDS = "0.4.0.1862.1.5"
SITE = "/etc/nginx/sites-available/pki.conf"
TLS_FILES = ("/etc/ceremony-publish/tls/repository.crt.pem", "/etc/ceremony-publish/tls/repository.key.pem")

ISSUE = '''
import sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ceremony.definition.model import load_definition
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.x509.profiles import subject_name
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.ca.registry import Registry

out = Path(sys.argv[1])
defn = load_definition("/etc/ceremony/pki.yml")
issuer = Path("/var/lib/ceremony/qualified/qualified.crt.pem")
rehearsal = x509.load_pem_x509_certificate(issuer.read_bytes()).subject == \\
    subject_name(defn.model.cas["qualified"].subject, True)
subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Oumou"),
                     x509.NameAttribute(NameOID.SURNAME, "Sangare"),
                     x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCML-0987654321"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "Oumou Sangare")])
csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(ec.generate_private_key(ec.SECP256R1()),
                                                                          hashes.SHA256())
(out / "ee.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
with Registry.open("/var/lib/ceremony/registry/registry.sqlite3") as registry:
    issued = issue_certificate(defn, "qualified", "qes-natural-person", out / "ee.csr.pem", out, registry,
                               ConsoleRecorder(rehearsal=rehearsal), issuer_cert_path=issuer, rehearsal=rehearsal,
                               pin_file="/etc/ceremony/qualified.pin", interactive=False)
print(f"ISSUED {issued.pem_path}")
'''


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Repository:
    tmp: Path
    cert: x509.Certificate       # a qualified certificate issued by the CA host's HSM key
    pds_url: str                 # from its qcStatements
    pds: bytes                   # the document the test put in the documents directory
    anchor: Path                 # the test TLS CA the testing inventory made
    published: PlaybookRun
    seconds: dict[str, float]


def pds_urls(cert: x509.Certificate) -> list[tuple[str, str]]:
    """(URL, language) of every PdsLocation of the certificate's QcPDS statement (EN 319 412-5 4.3.4)."""
    der = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")).value.value
    statements, _ = decoder.decode(der, asn1Spec=rfc3739.QCStatements())
    found = []
    for statement in statements:
        if str(statement["statementId"]) == QC_PDS:
            locations, _ = decoder.decode(bytes(statement["statementInfo"]))
            found += [(str(loc[0]), str(loc[1])) for loc in locations]
    return found


def curl(lab: Lab, publisher: str, url: str, tmp: Path, *extra: str) -> Answer:
    """A GET from the client namespace, the URL's host name resolved to this publisher."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = lab.th.PUBLISHERS_FROM_CLIENT[publisher]
    head, body = tmp / "head", tmp / "body"
    body.unlink(missing_ok=True)
    proc = subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "curl", "-sS", "--max-time", "5", "--resolve",
                           f"{parts.hostname}:{port}:{address}", *extra, "-D", str(head), "-o", str(body), url],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (publisher, url, proc.stderr)
    lines = head.read_text().strip().splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), headers, body.read_bytes() if body.exists() else b"")


def s_client(lab: Lab, publisher: str, name: str, anchor: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """openssl s_client from the client namespace, SNI and host name check for ``name``."""
    address = lab.th.PUBLISHERS_FROM_CLIENT[publisher]
    return subprocess.run(["ip", "netns", "exec", lab.th.CLIENT_NS, "openssl", "s_client", "-connect", f"{address}:443",
                           "-servername", name, "-verify_hostname", name, "-verify_return_error", "-CAfile",
                           str(anchor), *options], input="", capture_output=True, text=True, check=False, timeout=20)


def served_certificate(lab: Lab, publisher: str, name: str, anchor: Path) -> bytes:
    """SHA-256 fingerprint of the certificate the publisher presents for ``name``."""
    proc = s_client(lab, publisher, name, anchor, "-showcerts")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return x509.load_pem_x509_certificate(proc.stdout.encode()).fingerprint(hashes.SHA256())


@pytest.fixture(scope="module")
def repository(converged: PlaybookRun, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Repository:
    tmp = tmp_path_factory.mktemp("repository")
    seconds: dict[str, float] = {}
    started = time.monotonic()
    subca = lab.host("subca")
    work = subca.check_output("mktemp -d /tmp/ee.XXXXXX")
    subca.check_output("chown %s %s", CA_USER, work)
    (lab.th.host_root("subca") / work.lstrip("/") / "issue.py").write_text(ISSUE)
    issue = subca.run("su -s /bin/sh %s -c %s", CA_USER,
                      f"SOFTHSM2_CONF=/etc/softhsm/softhsm2.conf {SUITE_PYTHON} {work}/issue.py {work}")
    assert issue.rc == 0, issue.stdout[-3000:] + issue.stderr[-3000:]
    cert = x509.load_pem_x509_certificate(subca.file(issue.stdout.strip().splitlines()[-1].split()[1]).content_string
                                          .encode())
    seconds["issue"] = round(time.monotonic() - started, 1)
    (url, lang), = pds_urls(cert)
    # The controller's documents: the PDS under its URL's file name, CP/CPS as docs.build names them.
    docs = tmp / "docs"
    docs.mkdir()
    pds = b"%PDF-1.4\n% PKI Disclosure Statement (" + lang.encode() + b"), test document\n%%EOF\n"
    (docs / Path(urlsplit(url).path).name).write_bytes(pds)
    for name in ("cp-1.0.en.html", "cps-1.0.fr.html"):
        (docs / name).write_text(f"<!DOCTYPE html><title>{name}</title>\n")
    started = time.monotonic()
    published = lab.playbook("publish.yml", "--limit", "crl_publisher", "-e", f"crl_publisher_documents_dir={docs}")
    seconds["publish.yml with the documents"] = round(time.monotonic() - started, 1)
    assert published.returncode == 0, published.output[-6000:]
    anchor = lab.th.STATE_DIR / "tls" / "test-ca.crt.pem"
    assert anchor.is_file()
    return Repository(tmp=tmp, cert=cert, pds_url=url, pds=pds, anchor=anchor, published=published, seconds=seconds)


def test_the_pds_is_served_over_https_at_the_url_the_certificate_carries(repository: Repository, lab: Lab) -> None:
    url = repository.pds_url
    assert url.startswith("https://"), url
    directory = url.rsplit("/", 1)[0] + "/"
    for publisher in PUBLISHERS:
        answer = curl(lab, publisher, url, repository.tmp, "--cacert", str(repository.anchor))
        assert (answer.status, answer.headers["content-type"]) == (200, "application/pdf"), (publisher, answer)
        assert answer.body == repository.pds
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        index = curl(lab, publisher, directory, repository.tmp, "--cacert", str(repository.anchor))
        assert index.status == 200 and index.headers["content-type"].startswith("text/html")
        assert url.encode() in index.body
        home = curl(lab, publisher, f"https://{urlsplit(url).hostname}/", repository.tmp, "--cacert",
                    str(repository.anchor))
        assert home.status == 200 and url.encode() in home.body
        for name in ("cp-1.0.en.html", "cps-1.0.fr.html"):
            assert f"/policy/{name}".encode() in home.body
            document = curl(lab, publisher, f"https://{urlsplit(url).hostname}/policy/{name}", repository.tmp,
                            "--cacert", str(repository.anchor))
            assert document.status == 200 and document.headers["content-type"] == "text/html; charset=utf-8"
    print(f"\nrepository: {repository.seconds}")


def test_the_ca_certificates_are_served_over_https_and_http(repository: Repository, lab: Lab) -> None:
    aia = repository.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    issuer_url = next(d.access_location.value for d in aia
                      if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS)
    expected = x509.load_pem_x509_certificate((lab.exchange / f"{CA}.crt.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER)
    https_url = "https://" + issuer_url.split("://", 1)[1]
    for publisher in PUBLISHERS:
        over_tls = curl(lab, publisher, https_url, repository.tmp, "--cacert", str(repository.anchor))
        assert (over_tls.status, over_tls.headers["content-type"], over_tls.body) == (200, "application/pkix-cert",
                                                                                       expected), publisher
        plain = curl(lab, publisher, issuer_url, repository.tmp)  # the AIA URL itself: http, never redirected
        assert (plain.status, plain.body) == (200, expected) and "location" not in plain.headers


def test_the_tls_certificate_validates_for_the_name_and_tls_1_1_is_refused(repository: Repository, lab: Lab) -> None:
    name = urlsplit(repository.pds_url).hostname
    assert name
    made = x509.load_pem_x509_certificate((lab.th.STATE_DIR / "tls" / "repository.crt.pem").read_bytes())
    for publisher in PUBLISHERS:
        ok = s_client(lab, publisher, name, repository.anchor, "-tls1_2")
        assert ok.returncode == 0 and "Verification: OK" in ok.stdout and "Protocol  : TLSv1.2" in ok.stdout, \
            ok.stdout[-2000:] + ok.stderr[-2000:]
        assert served_certificate(lab, publisher, name, repository.anchor) == made.fingerprint(hashes.SHA256())
        # A client that would accept TLS 1.1 (its own security level lowered): the server refuses.
        old = s_client(lab, publisher, name, repository.anchor, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert old.returncode != 0 and "alert protocol version" in old.stderr, old.stdout[-1000:] + old.stderr[-1000:]
        # The name must match: another name fails the host name check.
        wrong = s_client(lab, publisher, "www.example.ml", repository.anchor, "-tls1_2")
        assert wrong.returncode != 0
        key = lab.host(publisher).file(TLS_FILES[1])
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600)


def test_crls_stay_on_http_and_the_pages_redirect_to_https(repository: Repository, lab: Lab) -> None:
    cdp = repository.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = cdp[0].full_name[0].value
    assert crl_url.startswith("http://"), crl_url
    pds_over_http = "http://" + repository.pds_url.split("://", 1)[1]
    for publisher in PUBLISHERS:
        crl = curl(lab, publisher, crl_url, repository.tmp)
        assert (crl.status, crl.headers["content-type"]) == (200, "application/pkix-crl") and "location" not in \
            crl.headers, (publisher, crl.status, crl.headers)
        x509.load_der_x509_crl(crl.body)
        redirect = curl(lab, publisher, pds_over_http, repository.tmp)
        assert (redirect.status, redirect.headers.get("location")) == (301, repository.pds_url), redirect.headers
        home = curl(lab, publisher, f"http://{urlsplit(crl_url).hostname}/", repository.tmp)
        assert (home.status, home.headers.get("location")) == (301, f"https://{urlsplit(crl_url).hostname}/")
        ocsp = curl(lab, publisher, f"http://{urlsplit(crl_url).hostname}/ocsp/", repository.tmp)
        assert ocsp.status == 404 and "location" not in ocsp.headers  # OCSP's place: http, never redirected


def wrong_certificate(tmp: Path) -> tuple[Path, Path]:
    """A valid certificate and its key, for a name the definition's URLs do not use."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.ml")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.ml")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "wrong.crt.pem", tmp / "wrong.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_a_certificate_not_covering_the_definitions_name_is_refused_and_nginx_serves_as_before(
        repository: Repository, lab: Lab) -> None:
    name = urlsplit(repository.pds_url).hostname
    assert name
    cert_path, key_path = wrong_certificate(repository.tmp)
    before = {p: [lab.host(p).file(f).sha256sum for f in (SITE, *TLS_FILES)] for p in PUBLISHERS}
    served = {p: served_certificate(lab, p, name, repository.anchor) for p in PUBLISHERS}
    started = time.monotonic()
    run = lab.playbook("publish.yml", "--limit", "crl_publisher", "-e", "crl_publisher_tls_test_certificate=false",
                       "-e", f"crl_publisher_tls_certificate={cert_path}", "-e", f"crl_publisher_tls_key={key_path}")
    elapsed = round(time.monotonic() - started, 1)
    assert run.returncode != 0, run.output[-3000:]
    message = f"REFUSED, nginx left as it was: {cert_path} does not cover {name} in its subjectAltName (it covers " \
              "www.example.ml)"
    assert message in " ".join(run.output.split()), run.output[-3000:]
    assert key_path.read_text().splitlines()[1] not in run.output
    for publisher in PUBLISHERS:
        assert run.recap()[publisher]["failed"] == 1 and run.recap()[publisher]["changed"] == 0, run.recap()
        assert [lab.host(publisher).file(f).sha256sum for f in (SITE, *TLS_FILES)] == before[publisher]
        assert served_certificate(lab, publisher, name, repository.anchor) == served[publisher]
        answer = curl(lab, publisher, repository.pds_url, repository.tmp, "--cacert", str(repository.anchor))
        assert answer.status == 200 and hashlib.sha256(answer.body).digest() == hashlib.sha256(repository.pds).digest()
    print(f"\nrefused run: {elapsed} s")
