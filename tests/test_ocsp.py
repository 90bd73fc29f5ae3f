"""OCSP (issue 13): the definition's BR 4.9.10 limits, the store's refusals, and on the session's rehearsal the
responder under gunicorn asked by ``openssl ocsp`` and GnuTLS ``ocsptool``, pkilint on the stored responses, the
wire statuses for bad requests, and (on a copy) a revocation followed by the job, an expired signer, the HSM gone."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, REPO, base_definition_data, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID as AIA

from ceremony.ca.registry import Registry
from ceremony.common.errors import DefinitionError, VerificationError
from ceremony.crl.encoding import tlv
from ceremony.definition.model import load_definition
from ceremony.ocsp.encoding import issuer_hashes, lint_response
from ceremony.ocsp.job import run_ocsp_job
from ceremony.ocsp.responder import parse_request
from ceremony.ocsp.store import ResponseStore, StoreError
from ceremony.rehearsal.ocsp import openssl_ocsp, responder
from ceremony.x509.ee_profiles import authority_information_access


def _definition(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    data = copy.deepcopy(base_definition_data())
    mutate(data)
    return write_definition(tmp_path / "pki.yml", data)


@pytest.mark.parametrize(("change", "path", "allowed"), [
    ({"validity": "11d"}, "cas.qualified.ocsp.validity", "at most 10d"),
    ({"validity": "7h", "refresh": "3h"}, "cas.qualified.ocsp.validity", "at least 8h"),
    ({"validity": "12h", "refresh": "7h", "signer_validity": "30d"}, "cas.qualified.ocsp.refresh", "at most 6h"),
    ({"validity": "4d", "refresh": "89h"}, "cas.qualified.ocsp.refresh", "at most 88h"),
    ({"validity": "10d", "refresh": "5d", "signer_validity": "40d"}, "cas.qualified.ocsp.refresh", "at most 4d"),
    ({"signer_validity": "91d"}, "cas.qualified.ocsp.signer_validity", "at most 90d"),
    ({"url": "https://ocsp.test.scse.ml/q"}, "cas.qualified.ocsp.url", None),
])
def test_definition_refuses_what_breaks_br_4_9_10(tmp_path: Path, change: dict[str, str], path: str,
                                                  allowed: str | None) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["cas"]["qualified"]["ocsp"].update(change)

    with pytest.raises(DefinitionError) as err:
        load_definition(_definition(tmp_path, mutate))
    text = str(err.value)
    assert path in text and "pki.yml" in text
    if allowed:
        assert allowed in text


def test_definition_refuses_ocsp_on_the_offline_root(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["cas"]["root"]["ocsp"] = dict(data["cas"]["qualified"]["ocsp"])

    with pytest.raises(DefinitionError, match=r"cas\.root\.ocsp.*root CRL batches"):
        load_definition(_definition(tmp_path, mutate))


def test_aia_names_the_ocsp_url_only_when_the_issuing_ca_has_one(tmp_path: Path) -> None:
    with_ocsp = load_definition(_definition(tmp_path, lambda data: None)).model.cas["qualified"]
    aia = authority_information_access(with_ocsp)
    assert [a.access_method for a in aia] == [AIA.OCSP, AIA.CA_ISSUERS]
    assert aia[0].access_location.value == "http://ocsp.test.scse.ml/qualified"

    def without(data: dict[str, Any]) -> None:
        del data["cas"]["qualified"]["ocsp"]

    plain = load_definition(_definition(tmp_path, without)).model.cas["qualified"]
    assert [a.access_method for a in authority_information_access(plain)] == [AIA.CA_ISSUERS]


def test_store_missing_or_corrupt_is_refused_never_recreated(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite3"
    with pytest.raises(StoreError, match=r"no OCSP store here.*--create-store"):
        ResponseStore.open(missing)
    assert not missing.exists()
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=r"not a readable OCSP store.*never made anew"):
        ResponseStore.open(junk, check=True)
    assert junk.read_bytes() == b"not a database at all" * 100
    ResponseStore.create(tmp_path / "s.sqlite3", "qualified", "0" * 64).close()
    with pytest.raises(StoreError, match="exists already"):
        ResponseStore.create(tmp_path / "s.sqlite3", "qualified", "0" * 64)
    with pytest.raises(StoreError, match="belongs to CA 'qualified', not 'other'"):
        ResponseStore.open(tmp_path / "s.sqlite3", ca="other")


def _twice(der: bytes) -> bytes:
    """The same OCSP request naming its certificate twice (two Request entries in requestList)."""
    def inside(tlv_bytes: bytes) -> bytes:  # the content of the first TLV (short or long length form)
        n = tlv_bytes[1] & 0x7F if tlv_bytes[1] & 0x80 else 0
        length = int.from_bytes(tlv_bytes[2:2 + n], "big") if n else tlv_bytes[1]
        return tlv_bytes[2 + n:2 + n + length]

    request = inside(inside(inside(der)))  # OCSPRequest > TBSRequest > requestList > the one Request
    return tlv(0x30, tlv(0x30, tlv(0x30, request * 2)))


def test_a_request_for_several_certificates_is_malformed_and_a_nonce_is_no_obstacle() -> None:
    """Every response is pre-signed for one CertID: a request naming two certificates cannot be answered (the
    responder sends malformedRequest for what parse_request refuses); a nonce is an extension the responder ignores."""
    one = ocsp.OCSPRequestBuilder().add_certificate_by_hash(b"\x01" * 20, b"\x02" * 20, 5, hashes.SHA1())
    der = one.build().public_bytes(serialization.Encoding.DER)
    assert parse_request(der) is not None and parse_request(_twice(der)) is None
    nonce = one.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build()
    assert parse_request(nonce.public_bytes(serialization.Encoding.DER)) is not None


# --- on the session's rehearsal ------------------------------------------------------------------------------

def _entries(out: Path, kind: str) -> list[dict[str, Any]]:
    import json

    return [a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["kind"] == kind]


@pytest.fixture(scope="module")
def served(full_rehearsal: tuple[Path, Any]) -> Iterator[tuple[Path, str]]:
    out, run = full_rehearsal
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with responder(out / "ocsp" / "qualified.sqlite3", out / "qualified.crt.pem", workers=2) as url:
        yield out, url


def _cert(out: Path, status: str) -> Path:
    entry = next(e for e in _entries(out, "end-entity-certificate") if e["status"] == status and e["format"] == "pem")
    return out / entry["path"]


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
@pytest.mark.parametrize("status", ["good", "revoked"])
def test_openssl_and_ocsptool_agree(served: tuple[Path, str], status: str) -> None:
    out, url = served
    cert = _cert(out, status)
    code, output = openssl_ocsp(url, out / "qualified.crt.pem", cert, out / "root.crt.pem")
    assert code == 0 and "Response verify OK" in output and f"{cert}: {status}" in output, output
    if status == "revoked":
        assert "Reason: keyCompromise" in output, output
    # With the nonce openssl sends by default: the pre-signed response carries none, openssl says so and verifies it.
    nonce = subprocess.run(["openssl", "ocsp", "-issuer", str(out / "qualified.crt.pem"), "-cert", str(cert), "-url",
                            url, "-CAfile", str(out / "root.crt.pem")], capture_output=True, text=True, timeout=30)
    assert nonce.returncode == 0 and f"{cert}: {status}" in nonce.stdout, nonce.stdout + nonce.stderr
    assert "WARNING: no nonce in response" in nonce.stdout + nonce.stderr
    assert "Response verify OK" in nonce.stdout + nonce.stderr
    gnutls = subprocess.run(["ocsptool", f"--ask={url}", "--load-cert", str(cert), "--load-issuer",
                             str(out / "qualified.crt.pem"), "--load-trust", str(out / "qualified.crt.pem"),
                             "--no-nonce"], capture_output=True, text=True, timeout=30)
    assert gnutls.returncode == 0, gnutls.stdout + gnutls.stderr
    assert f"Certificate Status: {status}" in gnutls.stdout and "Verifying OCSP Response: Success" in gnutls.stdout


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_pkilint_reports_nothing_on_the_sample_responses(served: tuple[Path, str]) -> None:
    out, _ = served
    samples = _entries(out, "ocsp-response")
    assert sorted((e["issuer"], e["status"]) for e in samples) == [("qualified", "good"), ("qualified", "revoked"),
                                                                    ("root", "good")]
    assert all(e["format"] == "der" for e in samples)
    assert _entries(out, "ocsp-signer-certificate")
    for entry in samples:
        der = (out / entry["path"]).read_bytes()
        assert [f for f in lint_response(der) if f.blocking] == []
        parsed = ocsp.load_der_ocsp_response(der)
        assert parsed.serial_number == int(entry["serial"], 16)
        assert parsed.certificate_status.name.lower() == entry["status"]
        cutoff = next(e for e in parsed.single_extensions if e.oid.dotted_string == "1.3.6.1.5.5.7.48.1.6")
        assert cutoff is not None  # archiveCutoff = the CA certificate's notBefore (CSS-6.3.10-08)
        # The delegated signer's certificate rides along; the root signs its own responses and sends none.
        assert len(parsed.certificates) == (0 if entry["issuer"] == "root" else 1)
        assert parsed.responder_key_hash is not None


def _ask(url: str, request: bytes | None = None, path: str | None = None) -> tuple[bytes, dict[str, str]]:
    if path is not None:
        req = urllib.request.Request(url + path)
    else:
        req = urllib.request.Request(url, data=request, headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read(), dict(resp.headers)


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_wire_statuses_and_caching_headers(served: tuple[Path, str]) -> None:
    out, url = served
    issuer = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    root = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    good = x509.load_pem_x509_certificate(_cert(out, "good").read_bytes())
    # GET, SHA-1 CertID, base64 URL-encoded in the path: the response with RFC 5019 caching headers.
    req = ocsp.OCSPRequestBuilder().add_certificate(good, issuer, hashes.SHA1()).build()
    b64 = urllib.request.quote(base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode(), safe="")
    body, headers = _ask(url, path="/qualified/" + b64)
    parsed = ocsp.load_der_ocsp_response(body)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL and parsed.serial_number == good.serial_number
    assert headers["Content-Type"] == "application/ocsp-response"
    cache = headers["Cache-Control"]
    assert "public, no-transform, must-revalidate" in cache and "max-age=" in cache
    assert headers["ETag"] and headers["Last-Modified"] and headers["Expires"]
    # POST, SHA-256 CertID.
    req = ocsp.OCSPRequestBuilder().add_certificate(good, issuer, hashes.SHA256()).build()
    body, _ = _ask(url, req.public_bytes(serialization.Encoding.DER))
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    # Another issuer (the root named as issuer of the end-entity certificate): unauthorized, never good.
    req = ocsp.OCSPRequestBuilder().add_certificate(good, root, hashes.SHA256()).build()
    body, headers = _ask(url, req.public_bytes(serialization.Encoding.DER))
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert headers["Cache-Control"] == "no-store"
    # A serial this CA never issued, with the right issuer hashes: unauthorized.
    name_hash, key_hash = issuer_hashes(issuer, "sha256")
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, 0x1234567, hashes.SHA256()).build()
    body, _ = _ask(url, req.public_bytes(serialization.Encoding.DER))
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    # What does not parse: malformedRequest, over GET and over POST.
    body, _ = _ask(url, path="/qualified/" + base64.b64encode(b"\x30\x03\x02\x01\x01").decode())
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    body, _ = _ask(url, b"garbage")
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # Two certificates in one request: every response is pre-signed for one CertID (malformedRequest, not a 500).
    req = ocsp.OCSPRequestBuilder().add_certificate(good, issuer, hashes.SHA256()).build()
    body, _ = _ask(url, _twice(req.public_bytes(serialization.Encoding.DER)))
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.fixture
def copy_of_rehearsal(full_rehearsal: tuple[Path, Any], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the rehearsal's outputs and tokens, and the environment that opens them (SOFTHSM2_CONF, PINs)."""
    src, _ = full_rehearsal
    out = tmp_path / "out"
    shutil.copytree(src, out, symlinks=True)
    conf = out / "hsm" / "softhsm2.conf"
    conf.write_text(conf.read_text().replace(str(src / "hsm" / "tokens"), str(out / "hsm" / "tokens")))
    env = {"SOFTHSM2_CONF": str(conf), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for line in (out / "hsm" / "rehearsal-pins.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name:
            env[name] = value
    return out, env


def _sign(out: Path, env: dict[str, str], definition: Path | None = None,
          stem: str = "qualified") -> subprocess.CompletedProcess[str]:
    """The OCSP job on the store of ``stem``'s key: the first key's (``qualified``) or, after the rehearsal's re-key,
    the new key's (``qualified.g3``, with its CA certificate)."""
    return subprocess.run([str(Path(sys.executable).with_name("ceremony-ocsp-sign")), "--definition",
                           str(definition or REPO / "inventory" / "testing" / "pki.yml"), "--ca", "qualified",
                           "--registry", str(out / "qualified-registry.sqlite3"), "--store",
                           str(out / "ocsp" / f"{stem}.sqlite3"), "--out", str(out), "--metrics-dir",
                           str(out / "metrics"), "--timings",
                           *(("--ca-cert", str(out / f"{stem}.crt.pem")) if stem != "qualified" else ())],
                          capture_output=True, text=True, timeout=120, env=env)


def _rows(store: Path) -> list[tuple[Any, ...]]:
    with ResponseStore.open(store, read_only=True) as s:
        return s.conn.execute("SELECT * FROM responses ORDER BY serial, hash").fetchall()


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_revocation_then_sign_changes_the_answer_and_bad_runs_change_nothing(
        copy_of_rehearsal: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    out, env = copy_of_rehearsal
    store = out / "ocsp" / "qualified.sqlite3"
    good = x509.load_pem_x509_certificate(_cert(out, "good").read_bytes())
    nothing = _sign(out, env)
    assert nothing.returncode == 0 and "0 response(s) signed (nothing due)" in nothing.stdout, nothing.stderr
    before = _rows(store)
    # The HSM unavailable (the definition names a token that is not there): one message, the store unchanged.
    data = base_definition_data()
    data["cas"]["qualified"]["hsm"]["token"] = {"label": "no-such-token"}
    gone = _sign(out, env, write_definition(tmp_path / "gone.yml", data))
    assert gone.returncode != 0 and "the HSM is unavailable" in gone.stderr and "unchanged" in gone.stderr
    assert gone.stderr.count("\n") == 1 and _rows(store) == before
    assert 'ocsp_last_run_failure{ca="qualified",reason="hsm"} 1' in (out / "metrics" /
                                                                      "ceremony_ocsp_qualified.prom").read_text()
    # An expired signer certificate: refused before the HSM, the store unchanged.
    defn = load_definition(REPO / "inventory" / "testing" / "pki.yml")
    signer = x509.load_pem_x509_certificate((out / "qualified.ocsp.crt.pem").read_bytes())
    with pytest.raises(VerificationError, match=r"expired on .*nothing was signed; renew it: invoke ocsp.signer"):
        run_ocsp_job(defn, "qualified", out / "qualified-registry.sqlite3", store, ceremony_out=out,
                     now=signer.not_valid_after_utc + dt.timedelta(seconds=1))
    with pytest.raises(VerificationError, match=r"expires on .*before a response signed now"):
        run_ocsp_job(defn, "qualified", out / "qualified-registry.sqlite3", store, ceremony_out=out,
                     now=signer.not_valid_after_utc - dt.timedelta(days=1))
    assert _rows(store) == before
    # A revocation, then the job: the next answer is revoked.
    with Registry.open(out / "qualified-registry.sqlite3") as registry:
        registry.revoke(good.serial_number, "superseded")
    signed = _sign(out, env)
    assert signed.returncode == 0 and "2 response(s) signed (2 status changed)" in signed.stdout, signed.stderr
    with responder(store, out / "qualified.crt.pem", workers=1) as url:
        code, output = openssl_ocsp(url, out / "qualified.crt.pem", _cert(out, "good"), out / "root.crt.pem")
    assert code == 0 and ": revoked" in output and "Reason: superseded" in output, output


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_a_refused_pin_sets_the_latch_and_is_never_tried_again(copy_of_rehearsal: tuple[Path, dict[str, str]]) -> None:
    out, env = copy_of_rehearsal
    store = out / "ocsp" / "qualified.sqlite3"
    before = _rows(store)
    wrong = {**env, "CEREMONY_QUALIFIED_PIN": env["CEREMONY_QUALIFIED_PIN"] + "x"}
    refused = _sign(out, wrong)
    assert refused.returncode != 0 and "The PIN latch is set" in refused.stderr, refused.stderr
    latch = out / "ocsp" / ".state" / "qualified.pin-failed"
    assert latch.is_file()
    metrics = (out / "metrics" / "ceremony_ocsp_qualified.prom").read_text()
    assert 'reason="pin_incorrect"' in metrics
    again = _sign(out, env)  # even with the right PIN: nobody tries until an operator clears the latch
    assert again.returncode != 0 and "is not tried again" in again.stderr, again.stderr
    assert _rows(store) == before
    clear = subprocess.run([str(Path(sys.executable).with_name("ceremony-crl-sign")), "--clear-pin-latch", "--ca",
                            "qualified", "--out", str(out / "ocsp")], capture_output=True, text=True, env=env)
    assert clear.returncode == 0 and not latch.exists(), clear.stderr
    assert _sign(out, env).returncode == 0


@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_signer_renewal_is_a_recorded_ceremony_with_the_same_key(
        copy_of_rehearsal: tuple[Path, dict[str, str]]) -> None:
    """The rehearsal ends re-keyed (its life-cycle stage): the current key is generation 3, whose signer the stage
    certified (``qualified.g3.ocsp.crt.pem``); renewing it keeps its key."""
    out, env = copy_of_rehearsal
    stem = "qualified.g3"
    invoke = [str(Path(sys.executable).with_name("invoke")), "ocsp.signer", "--ca", "qualified", "--definition",
              str(REPO / "inventory" / "testing" / "pki.yml"), "--out", str(out), "--rehearsal", "--metrics-dir",
              str(out / "metrics")]
    current = subprocess.run(invoke, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert current.returncode == 0 and "nothing to do" in current.stdout, current.stdout + current.stderr
    assert not (out / f"{stem}.ocsp.g2.crt.pem").exists()
    before = len(list((out / "transcripts").glob("ocsp-signer-certification*.jsonl")))
    renewed = subprocess.run([*invoke, "--force"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert renewed.returncode == 0, renewed.stdout[-3000:] + renewed.stderr[-3000:]
    first = x509.load_pem_x509_certificate((out / f"{stem}.ocsp.crt.pem").read_bytes())
    second = x509.load_pem_x509_certificate((out / f"{stem}.ocsp.g2.crt.pem").read_bytes())
    assert second.public_key() == first.public_key() and second.serial_number != first.serial_number
    eku = second.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]
    assert second.extensions.get_extension_for_class(x509.OCSPNoCheck).value is not None
    kinds = [e for e in _entries(out, "ocsp-signer-certificate") if e.get("generation") == 2
             and e["path"].startswith(f"{stem}.")]
    assert {e["format"] for e in kinds} == {"pem", "der"}
    assert len(list((out / "transcripts").glob("ocsp-signer-certification*.jsonl"))) == before + 1
    # the current key is key generation 3: its signer's metrics in a file of their own, labelled with it (the first
    # key's signer renewal writes ceremony_ocsp_signer_qualified.prom; docs/ocsp.md, "After a subordinate re-key")
    assert 'ocsp_signer_certificate_not_after_seconds{ca="qualified",key_generation="3"}' in (
        out / "metrics" / "ceremony_ocsp_signer_qualified.g3.prom").read_text()
    assert not (out / "metrics" / "ceremony_ocsp_signer_qualified.prom").exists()
    after = _sign(out, env, stem=stem)
    assert after.returncode == 0 and f"signer {stem}.ocsp.g2.crt.pem" in after.stdout, after.stdout + after.stderr



@pytest.mark.hsm
@pytest.mark.xdist_group(REHEARSAL_GROUP)
def test_root_batch_pre_signs_the_subordinate_status_and_a_revocation_reaches_the_root_responder(
        copy_of_rehearsal: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    out, env = copy_of_rehearsal
    sub = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    aia = sub.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_method == AIA.OCSP and aia[0].access_location.value == "http://ocsp.test.scse.ml/root"
    invoke = str(Path(sys.executable).with_name("invoke"))
    definition = str(REPO / "inventory" / "testing" / "pki.yml")
    batch = subprocess.run([invoke, "crl.root-batch", "--definition", definition, "--out", str(out), "--rehearsal",
                            "--count", "1", "--revoke", str(out / "qualified.crt.pem")], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env=env)
    assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]
    pub = tmp_path / "pub"
    published = subprocess.run([invoke, "crl.publish-root", "--definition", definition, "--batch-dir", str(out),
                                "--out", str(pub)], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert published.returncode == 0, published.stdout + published.stderr
    store = pub / "ocsp" / "root.sqlite3"
    with responder(store, out / "root.crt.pem", workers=1) as url:
        code, output = openssl_ocsp(url, out / "root.crt.pem", out / "qualified.crt.pem", out / "root.crt.pem")
    assert code == 0 and "Response verify OK" in output and ": revoked" in output, output
    assert "Reason: keyCompromise" in output, output
