"""The witness sees what they confirm; the operator sees a summary at the end.

The root key, subordinate key, subordinate signing and root CRL ceremonies run once for the module, in a
rehearsal on fresh SoftHSM tokens, through the Invoke tasks in this process: the first command line as an
operator types it, then each time the command the previous summary printed under "Next". The transcripts'
``say`` records inside each witnessed step must hold the facts to check, computed again here from the
written files with ``openssl`` and ``sha256sum``; each summary must list every file the run added with the
SHA-256 ``sha256sum`` gives, the certificate fingerprint ``openssl x509 -fingerprint`` gives, the verdict
INTACT and the next command.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TESTING_DEFINITION, base_definition_data, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.ceremonies.sign_subordinate import csr_key_match
from ceremony.ceremonies.steps import lint_lines
from ceremony.common.display import make_console
from ceremony.common.errors import RequestError, VerificationError
from ceremony.common.fingerprints import colon_form, read_aloud
from ceremony.definition.model import LintAllowance, load_definition
from ceremony.hsm import softhsm
from ceremony.transcript.summary import Fingerprint, NextStep, Summary, WrittenFile, render_summary, show_summary
from ceremony.x509.lint import Finding

sys.path.insert(0, str(REPO))  # Invoke loads ``tasks`` from the repository root, as the operator does
import tasks

SCRIPTS = ("root-key-generation", "subordinate-key-generation", "subordinate-signing", "root-crl-batch")
SHA_LINE = re.compile(r"^  ([0-9a-f]{64})  (.+)$")
COLON = re.compile(r"^    ([0-9A-F]{2}(?::[0-9A-F]{2}){31})$")


@dataclass
class Ran:
    script: str
    command: list[str]
    output: str
    new_files: set[str]  # files that appeared or changed in the output directory, relative to it

    @property
    def summary(self) -> list[str]:
        lines = self.output.splitlines()
        start = max(i for i, line in enumerate(lines) if "Summary" in line and line.startswith("─"))
        return lines[start:]

    @property
    def transcript(self) -> Path:
        return Path(next(line for line in self.summary if line.startswith("Transcript: "))[len("Transcript: "):])

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.transcript.read_text(encoding="utf-8").splitlines()]

    def said(self, step: str) -> str:
        """Everything shown to the room (and recorded) inside ``step``, every time it ran."""
        return "\n".join(r["text"] for r in self.records if r.get("type") == "say" and r.get("step") == step)

    def evidence(self, name: str, step: str) -> dict[str, Any]:
        return next(r["data"] for r in self.records
                    if r.get("type") == "evidence" and r.get("name") == name and r.get("step") == step)

    @property
    def next_commands(self) -> list[str]:
        lines = self.summary
        start = lines.index("Next:")
        return [line.strip() for line in lines[start + 1:] if line.startswith("    invoke ")]


@dataclass
class Run:
    definition: Path
    out: Path
    ceremonies: dict[str, Ran]


def invoke(argv: list[str]) -> str:
    """``invoke ARGS`` as the command line says, in this process; what it printed."""
    assert argv[0] == "invoke"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tasks_program().run(argv, exit=False)
    return buffer.getvalue()


def tasks_program() -> Any:
    from invoke import Program

    return Program(namespace=tasks.ns, version="test")


def hashes(directory: Path) -> dict[str, str]:
    return {rel: sha256sum(directory / rel).split()[0] for rel in tree(directory)} if directory.exists() else {}


def sha256sum(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout.rstrip("\n")


def shell(command: str) -> str:
    return subprocess.run(command, shell=True, check=True, capture_output=True, text=True).stdout.strip()


def spki_of_pub(pem: Path) -> str:
    return shell(f"openssl pkey -pubin -in {shlex.quote(str(pem))} -outform DER | sha256sum").split()[0]


def spki_of_csr(csr: Path) -> str:
    return shell(f"openssl req -in {shlex.quote(str(csr))} -pubkey -noout | openssl pkey -pubin -outform DER "
                 "| sha256sum").split()[0]


def openssl_date(text: str) -> dt.datetime:
    """``Jan  1 00:00:00 2026 GMT`` as openssl prints it."""
    return dt.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)


def utc(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def openssl_x509(cert: Path, *options: str) -> dict[str, str]:
    out = shell(f"openssl x509 -in {shlex.quote(str(cert))} -noout {' '.join(options)}")
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("witness-view")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        for name, ca in data["cas"].items():
            suffix = secrets.token_hex(4)
            label, env = f"t-wv-{name}-{suffix}"[:32], f"TEST_PIN_WV_{name.upper()}_{suffix.upper()}"
            pin, so_pin = softhsm.random_pin(), softhsm.random_pin()
            softhsm.init_token(SOFTHSM_CONF, label, pin, so_pin)
            mp.setenv(env, pin)
            mp.setenv(env + "_SO", so_pin)
            ca["hsm"].update(module=softhsm.softhsm_module(), token={"label": label}, pin_env=env,
                             so_pin_env=env + "_SO")
        definition = write_definition(tmp / "pki.yml", data)
        out = tmp / "out"
        command = ["invoke", "ceremony.root", "--env", "testing", "--definition", str(definition), "--out", str(out),
                   "--rehearsal"]
        ran: dict[str, Ran] = {}
        for script in SCRIPTS:
            before = hashes(out)
            output = invoke(command)
            after = hashes(out)
            new = {rel for rel, digest in after.items() if before.get(rel) != digest}
            ran[script] = Ran(script, command, output, new)
            nexts = ran[script].next_commands
            assert len(nexts) == 1, output[-3000:]
            command = shlex.split(nexts[0])  # the command the summary printed, run as printed
        yield Run(definition, out, ran)


# --- what the witness sees ----------------------------------------------------------------------------

@pytest.mark.hsm
def test_definition_check_shows_what_the_certificate_will_hold(run: Run) -> None:
    digest = sha256sum(run.definition).split()[0]
    for script, ca, files in (
            ("root-key-generation", "root",
             "root.crt.pem, root.crt.der, root.pub.pem, root.pub.der, root.seal.crt.pem, root.seal.crt.der"),
            ("subordinate-key-generation", "qualified",
             "qualified.csr.pem, qualified.csr.der, qualified.pub.pem, qualified.pub.der, qualified.seal.csr.pem, "
             "qualified.seal.pub.pem"),
            ("subordinate-signing", "qualified", "qualified.crt.pem, qualified.crt.der, qualified.seal.crt.pem, "
             "qualified.seal.crt.der")):
        said = run.ceremonies[script].said("definition-check")
        cert = x509.load_pem_x509_certificate((run.out / f"{ca}.crt.pem").read_bytes())  # as it came out
        path_length = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        assert f"definition: {run.definition} (SHA-256 {digest[:16]}…), CA {ca!r}" in said, script
        assert f"subject (as in the certificate): {cert.subject.rfc4514_string()}\n" in said, script
        assert f"validity: {utc(cert.not_valid_before_utc)} to {utc(cert.not_valid_after_utc)}" in said, script
        assert "key type: ECDSA P-384" in said, script
        assert f"path length: {'no limit' if path_length is None else path_length}" in said, script
        assert f"output directory: {run.out}\n" in said, script
        assert f"files to be written: {files} (" in said, script
    root_cert = openssl_x509(run.out / "root.crt.pem", "-subject", "-nameopt", "RFC2253")
    assert f"subject (as in the certificate): {root_cert['subject']}\n" in \
        run.ceremonies["root-key-generation"].said("definition-check")
    signing = run.ceremonies["subordinate-signing"].said("definition-check")
    assert f"issuer: {root_cert['subject']}\n" in signing
    assert f"issuer certificate: {run.out / 'root.crt.pem'} (SHA-256 " \
           f"{sha256sum(run.out / 'root.crt.pem').split()[0][:16]}…)" in signing
    # the profile is linted with a stand-in key before any key exists, and the witness sees the result
    assert "pkilint: no finding at WARNING or above (the profile, with a stand-in key)" in \
        run.ceremonies["root-key-generation"].said("definition-check")
    assert "pkilint: no finding at WARNING or above (the profile)" in \
        run.ceremonies["subordinate-signing"].said("csr-verify")


@pytest.mark.hsm
def test_key_generate_shows_the_key_hash_openssl_computes_and_the_key_flags(run: Run) -> None:
    for script, ca in (("root-key-generation", "root"), ("subordinate-key-generation", "qualified")):
        ceremony = run.ceremonies[script]
        said = ceremony.said("key-generate")
        digest = spki_of_pub(run.out / f"{ca}.pub.pem")
        for line in read_aloud(digest):
            assert f"\n    {line}\n" in said, (script, line)
        assert f"OpenSSL form: {colon_form(digest)}" in said
        key = ceremony.evidence("key", "key-generate")
        assert key["spki_sha256"] == digest and key["id_hex"]
        assert f"label: {key['label']!r}, CKA_ID: {key['id_hex']}" in said
        assert "key type: ECDSA P-384" in said
        assert "generated on this token (CKA_LOCAL): yes" in said and key["local"] is True
        assert "always sensitive (CKA_ALWAYS_SENSITIVE): yes" in said and key["always_sensitive"] is True
    # the root is backed up under M-of-N custody: extractable, but only wrapped under a trusted key, and said so
    root = run.ceremonies["root-key-generation"].said("key-generate")
    assert "never extractable (CKA_NEVER_EXTRACTABLE): NO" in root
    assert "extractable only wrapped under a trusted key (CKA_WRAP_WITH_TRUSTED: yes)" in root
    qualified = run.ceremonies["subordinate-key-generation"].said("key-generate")
    assert "never extractable (CKA_NEVER_EXTRACTABLE): yes" in qualified and "WRAP_WITH_TRUSTED" not in qualified


@pytest.mark.hsm
def test_csr_verify_shows_the_csr_key_and_what_it_was_checked_against(run: Run) -> None:
    said = run.ceremonies["subordinate-signing"].said("csr-verify")
    csr_path = run.out / "qualified.csr.pem"
    digest = spki_of_csr(csr_path)
    assert digest == spki_of_pub(run.out / "qualified.pub.pem")  # the key the key ceremony read aloud
    for line in read_aloud(digest):
        assert f"\n    {line}\n" in said
    assert f"OpenSSL form: {colon_form(digest)}" in said
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert f"subject: {csr.subject.rfc4514_string()} (as the definition gives it)" in said
    assert "key type: ECDSA P-384" in said
    assert f"matches {run.out / 'qualified.pub.pem'}, written at the subordinate key ceremony" in said
    assert run.ceremonies["subordinate-signing"].evidence("csr", "csr-verify")["key_checked_against"].startswith(
        f"matches {run.out / 'qualified.pub.pem'}")


@pytest.mark.hsm
def test_lint_sign_and_verify_steps_show_their_results_and_the_certificate(run: Run) -> None:
    for script, ca in (("root-key-generation", "root"), ("subordinate-signing", "qualified")):
        ceremony = run.ceremonies[script]
        cert_path = run.out / f"{ca}.crt.pem"
        o = openssl_x509(cert_path, "-serial", "-startdate", "-enddate")
        serial = format(int(o["serial"], 16), "x")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert "  pkilint: no finding at WARNING or above\n" in ceremony.said("certificate-lint") + "\n"
        assert f"certificate serial (hex): {serial}" in ceremony.said("certificate-sign")
        said = ceremony.said("certificate-verify")
        assert "signature: verified with the issuer's public key" in said
        assert "TBS: identical to the one linted before signing" in said
        assert "pkilint: no finding at WARNING or above (after signing)" in said
        assert f"subject: {cert.subject.rfc4514_string()}\n" in said
        assert f"issuer: {cert.issuer.rfc4514_string()}\n" in said
        assert f"serial (hex): {serial}\n" in said
        assert f"notBefore: {utc(openssl_date(o['notBefore']))}" in said
        assert f"notAfter: {utc(openssl_date(o['notAfter']))}" in said
    assert "CA: yes, path length: 0" in run.ceremonies["subordinate-signing"].said("certificate-verify")


@pytest.mark.hsm
def test_crl_batch_shows_each_crl_number_and_window(run: Run) -> None:
    batch = run.ceremonies["root-crl-batch"]
    plan, signed = batch.said("definition-check"), batch.said("crl-sign")
    crls = sorted(run.out.glob("crl/root-*.crl"), key=lambda p: int(p.stem.split("-")[-1]))
    assert len(crls) == 4 and "4 CRL(s), numbers 1 to 4" in plan
    for path in crls:
        o = dict(line.split("=", 1) for line in shell(
            f"openssl crl -inform DER -in {shlex.quote(str(path))} -noout -crlnumber -lastupdate -nextupdate"
        ).splitlines())
        number = int(o["crlNumber"], 16)
        window = f"thisUpdate {utc(openssl_date(o['lastUpdate']))}, nextUpdate {utc(openssl_date(o['nextUpdate']))}"
        assert f"CRL {number}: {window}" in plan
        assert f"root CRL {number} signed by the root key: {window}, 0 entries" in signed
    assert "pkilint: no finding at WARNING or above (root CRL 1)" in batch.said("crl-lint")
    assert "against CRL 3: number strictly greater" in batch.said("crl-verify")


@pytest.mark.hsm
def test_every_witnessed_step_shows_the_witness_something(run: Run) -> None:
    for script, ceremony in run.ceremonies.items():
        records = ceremony.records
        witnessed = {r["step"] for r in records if r.get("type") == "step-end" and r.get("witness")}
        assert witnessed, script
        for step in witnessed:
            assert ceremony.said(step).strip(), f"{script}: step {step!r} asks the witness and shows nothing"


# --- the summary at the end ---------------------------------------------------------------------------

@pytest.mark.hsm
def test_summary_lists_every_new_file_with_the_sha256_sha256sum_gives(run: Run) -> None:
    for script, ceremony in run.ceremonies.items():
        listed = {}
        for line in ceremony.summary:
            match = SHA_LINE.match(line)
            if match:
                listed[match.group(2)] = match.group(1)
                assert sha256sum(Path(match.group(2))) == f"{match.group(1)}  {match.group(2)}", line
        # manifest.json changes with every run and lists these; .state/ holds the CRL number reservation
        expected = {str(run.out / rel) for rel in ceremony.new_files
                    if rel != "manifest.json" and not rel.startswith(".state/")}
        assert set(listed) == expected, script
        assert str(ceremony.transcript) in listed and ceremony.transcript.parent == run.out / "transcripts"
        assert f"Files written by this run ({len(listed)}," in "\n".join(ceremony.summary)
    root = {Path(p).name for p in run.ceremonies["root-key-generation"].new_files}
    assert {"root.crt.pem", "root.crt.der", "root.pub.pem", "root.pub.der", "pki.yml"} <= root


@pytest.mark.hsm
def test_summary_gives_the_fingerprint_the_verdict_and_the_next_command(run: Run) -> None:
    options = f"--env testing --definition {run.definition} --out {run.out} --rehearsal"
    expected_next = {
        "root-key-generation": f"invoke ceremony.subordinate-key --ca qualified {options}",
        "subordinate-key-generation": f"invoke ceremony.sign-subordinate --ca qualified --csr "
                                      f"{run.out / 'qualified.csr.pem'} {options}",
        "subordinate-signing": f"invoke crl.root-batch {options}",
        "root-crl-batch": f"invoke crl.publish-root --env testing --definition {run.definition} --batch-dir {run.out}",
    }
    for script, ceremony in run.ceremonies.items():
        summary = ceremony.summary
        assert "REHEARSAL" in summary[0]
        verdict = summary[summary.index(f"Transcript: {ceremony.transcript}") + 1]
        # verified as the auditor will, anchored in the root beside it; the subordinate key's seal chains to
        # the root only once the signing ceremony has issued its certificate
        expected = ("  SEALED, NOT YET ANCHORED" if script == "subordinate-key-generation" else
                    "  INTACT: the transcript verifies, sealed by a key anchored in the trust anchor (a REHEARSAL")
        assert verdict.startswith(expected), (script, verdict)
        assert ceremony.next_commands == [expected_next[script]], script
    # the commands printed were run as printed (the fixture ran each one): their transcripts exist
    assert [c.command[1] for c in run.ceremonies.values()] == ["ceremony.root", "ceremony.subordinate-key",
                                                               "ceremony.sign-subordinate", "crl.root-batch"]
    for script, ca in (("root-key-generation", "root"), ("subordinate-signing", "qualified")):
        printed = openssl_x509(run.out / f"{ca}.crt.pem", "-fingerprint", "-sha256")
        fingerprint = next(v for k, v in printed.items() if k.lower() == "sha256 fingerprint")
        colons = [m.group(1) for m in map(COLON.match, run.ceremonies[script].summary) if m]
        assert fingerprint in colons, script
    # the subordinate key ceremony has no certificate: the key hash read aloud is in its summary
    key = colon_form(spki_of_pub(run.out / "qualified.pub.pem"))
    assert key in [m.group(1) for m in map(COLON.match, run.ceremonies["subordinate-key-generation"].summary) if m]


@pytest.mark.hsm
def test_the_verdict_is_the_auditors(run: Run) -> None:
    """The summary's INTACT is what the auditor's own command says of the same transcript."""
    transcript = run.ceremonies["subordinate-signing"].transcript
    result = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "audit.verify", str(transcript), "--artifacts",
                             str(run.out), "--trust", str(run.out / "root.crt.pem"), "--rehearsal"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = run.ceremonies["subordinate-signing"].summary
    shown = summary[summary.index(f"Transcript: {transcript}") + 1].strip()
    assert result.stdout.strip().splitlines()[-1] == shown and shown.startswith("INTACT")


@pytest.mark.hsm
def test_a_transcript_that_does_not_verify_is_shown_and_is_an_error(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    transcript = out / "transcripts" / run.ceremonies["root-key-generation"].transcript.name
    text = transcript.read_text(encoding="utf-8")
    transcript.write_text(text.replace("no finding at WARNING or above", "no finding at WARNING or ab0ve", 1),
                          encoding="utf-8")
    buffer = io.StringIO()
    with pytest.raises(VerificationError, match="the transcript just sealed does not verify"):
        show_summary("root-key-generation", load_definition(run.definition), out, [], transcript, True,
                     console=make_console(file=buffer))
    printed = buffer.getvalue()
    assert "INVALID: first bad record" in printed
    assert f"Transcript: {transcript}" in printed


# --- pieces, without an HSM ---------------------------------------------------------------------------

def test_csr_key_is_checked_against_the_pin_the_key_ceremony_or_the_witness(tmp_path: Path) -> None:
    ca = load_definition(TESTING_DEFINITION).model.cas["qualified"]
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib

    digest = hashlib.sha256(der).hexdigest()
    pinned = ca.model_copy(update={"spki_sha256": digest})
    assert "matches cas.qualified.spki_sha256, pinned in the definition" in csr_key_match("qualified", pinned,
                                                                                            digest, tmp_path)
    neither = csr_key_match("qualified", ca, digest, tmp_path)
    assert "NOT CHECKED BY THE SOFTWARE" in neither
    assert "read aloud and written on the paper script at the subordinate key ceremony" in neither
    pub = tmp_path / "qualified.pub.pem"
    pub.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert csr_key_match("qualified", ca, digest, tmp_path).startswith(
        f"  matches {pub}, written at the subordinate key ceremony ({colon_form(digest)})")
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    pub.write_bytes(other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(RequestError, match="is not the key of"):
        csr_key_match("qualified", ca, digest, tmp_path)


def test_lint_result_names_each_allowed_finding_with_the_definitions_reason() -> None:
    assert lint_lines([], []) == ["  pkilint: no finding at WARNING or above"]
    info = Finding("pkix.some_notice", "INFO", "", "certificate")
    warning = Finding("pkix.subject_key_identifier_missing", "WARNING", "[x] :cd:", "certificate.tbsCertificate")
    reason = LintAllowance(validation="pkix.subject_key_identifier_missing",
                           reason="the profile of this old CA has no SKI, accepted by the committee")
    lines = lint_lines([warning, info], [reason], "after signing")
    assert lines[0] == "  pkilint: 1 finding(s) at WARNING or above (after signing), each allowed by the definition:"
    assert lines[1] == (f"    {warning} — allowed because: the profile of this old CA has no SKI, accepted by the "
                        "committee")
    assert lines[2] == "    (1 finding(s) below WARNING, recorded in the evidence)"


def test_summary_prints_data_exactly_as_it_is(tmp_path: Path) -> None:
    """Paths, subjects and fingerprints are data: no Rich markup, no emoji codes (``:cd:`` is 💿)."""
    digest = "8bcd80" + "ab" * 29
    summary = Summary(tmp_path, rehearsal=False,
                      files=[WrittenFile(Path("out/[bold]x[/bold]/:cd:.pem"), digest, "root-certificate")],
                      fingerprints=[Fingerprint("certificate CN=[red]Root:ab:", digest)],
                      transcript=Path("out/transcripts/[i]t.jsonl"), status="intact",
                      verdict="INTACT: the transcript verifies",
                      next_steps=[NextStep("at [b]the root[/b]", "invoke crl.root-batch --env 'x [y]'")])
    buffer = io.StringIO()
    render_summary(summary, make_console(file=buffer, width=200))
    printed = buffer.getvalue()
    assert f"  {digest}  out/[bold]x[/bold]/:cd:.pem\n" in printed
    assert "  certificate CN=[red]Root:ab::\n" in printed
    assert f"    {colon_form(digest)}\n" in printed and "8B:CD:80" in printed
    assert "Transcript: out/transcripts/[i]t.jsonl\n" in printed
    assert "  at [b]the root[/b]:\n    invoke crl.root-batch --env 'x [y]'\n" in printed
    assert "💿" not in printed and "🆎" not in printed and "REHEARSAL" not in printed
