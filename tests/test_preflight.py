"""Every setup problem is found by the pre-flight, before anyone signs in, with its fix.

Each test breaks one thing on real SoftHSM tokens and runs the ceremony task as an operator would
(``invoke ceremony.root …``): the pre-flight names the problem and its fix, exits 13, nobody is asked
to sign in (standard input is closed: a sign-in prompt would fail differently), and nothing changes on
disk or on the token. The engine-level checks are also called directly where that is clearer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, tree

from ceremony.ceremonies.preflight import run_preflight
from ceremony.definition.model import load_definition
from ceremony.hsm.session import open_session, pin_source_for

INVOKE = str(REPO / ".venv" / "bin" / "invoke")

pytestmark = pytest.mark.hsm


def _invoke(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env or dict(os.environ))


def _objects(defn_path: Path, ca: str = "root") -> int:
    hsm = load_definition(defn_path).model.cas[ca].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        return len(list(session.get_objects()))


def _refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 13, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.count("error:") == 1 and "nobody has signed in and nothing was changed" in proc.stderr
    assert "Sign-in" not in proc.stdout and "Émargement" not in proc.stdout
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)


def _root(defn: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _invoke("ceremony.root", "--definition", str(defn), "--out", str(out), "--rehearsal", *extra, env=env)


def test_everything_ready_passes_and_changes_nothing(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, _ = definition_on_tokens()
    proc = _invoke("ceremony.preflight", "--definition", str(defn), "--ceremony", "root-key-generation",
                   "--out", str(tmp_path / "out"), "--rehearsal")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("[ok  ] PKCS#11 module of 'root'", "[ok  ] login to 'root': the PIN opens the token",
                 "[ok  ] key 'root-2026' of 'root': label free", "pre-flight passed"):
        assert line in proc.stdout
    assert not (tmp_path / "out").exists() and _objects(defn) == 0


def test_missing_module(tmp_path: Path, definition_on_tokens: Any) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["cas"]["root"]["hsm"]["module"] = "/opt/hsm/lib/libmissing.so"
    defn, _ = definition_on_tokens(mutate)
    _refused(_root(defn, tmp_path / "out"), "PKCS#11 module not found: /opt/hsm/lib/libmissing.so",
             "fix: install the HSM vendor's module or correct cas.root.hsm.module")
    assert not (tmp_path / "out").exists()


def test_token_not_found_says_which_attribute(tmp_path: Path, definition_on_tokens: Any) -> None:
    def mutate(d: dict[str, Any]) -> None:
        label = d["cas"]["root"]["hsm"]["token"]["label"]
        d["cas"]["root"]["hsm"]["token"] = {"uri": f"pkcs11:token={label};model=HSM"}
    defn, _ = definition_on_tokens(mutate)
    proc = _root(defn, tmp_path / "out")
    _refused(proc, "token of 'root'", "model", "'HSM'", "SoftHSM")
    assert not (tmp_path / "out").exists()


def test_pin_file_readable_by_others(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, tokens = definition_on_tokens()
    pin = tmp_path / "root.pin"
    pin.write_text(tokens["root"].user_pin)
    pin.chmod(0o644)
    _refused(_root(defn, tmp_path / "out", "--pin-file", str(pin)), f"{pin}: PIN file has mode 0644",
             f"fix: chmod 600 {pin}")
    assert tokens["root"].user_pin not in _root(defn, tmp_path / "out", "--pin-file", str(pin)).stderr
    assert _objects(defn) == 0


def test_wrong_pin_is_found_before_sign_in(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, tokens = definition_on_tokens()
    env = {**os.environ, tokens["root"].pin_env: "999999"}
    proc = _root(defn, tmp_path / "out", env=env)
    _refused(proc, "login to 'root'", f"wrong PIN for token label '{tokens['root'].label}' (from environment "
             f"variable {tokens['root'].pin_env})")
    assert "999999" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists() and _objects(defn) == 0


def test_no_pin_source_and_no_terminal(tmp_path: Path, definition_on_tokens: Any) -> None:
    defn, tokens = definition_on_tokens()
    env = {k: v for k, v in os.environ.items() if k != tokens["root"].pin_env}
    _refused(_root(defn, tmp_path / "out", env=env), "no PIN available",
             f"fix: export {tokens['root'].pin_env} or pass --pin-file FILE (mode 0600)")


def test_key_label_taken_by_objects_left_on_the_token(tmp_path: Path, definition_on_tokens: Any) -> None:
    """After kill -9 the key stays: named with the command that removes it, nothing generated again."""
    from ceremony.hsm.keys import generate_key

    defn, tokens = definition_on_tokens()
    ca = load_definition(defn).model.cas["root"]
    with open_session(ca.hsm, pin_source_for(ca.hsm, interactive=False)) as session:
        generate_key(session, ca.key, ca.hsm.key_label)
    before = _objects(defn)
    proc = _root(defn, tmp_path / "out")
    _refused(proc, "objects labelled 'root-2026' exist on the token already (private key, public key)",
             f"pkcs11-tool --module {tokens['root'].module} --token-label {tokens['root'].label} --login "
             "--delete-object --type privkey --label root-2026")
    assert _objects(defn) == before


def test_csr_for_another_key_is_refused_before_the_root_signs(tmp_path: Path, definition_on_tokens: Any) -> None:
    """Without a pin in the definition, the key written at the subordinate key ceremony is the reference."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ceremony.ceremonies.root_key import root_ceremony
    from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
    from ceremony.transcript.recorder import ConsoleRecorder

    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)
    out = tmp_path / "out"
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                             interactive=False)
    # Someone else's key in place of the CSR's key: same subject, valid signature, wrong key.
    from ceremony.x509.csr import load_csr

    real = load_csr(out / "qualified.csr.pem")
    other = ec.generate_private_key(ec.SECP384R1())
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    forged = x509.CertificateSigningRequestBuilder().subject_name(real.subject).sign(other, hashes.SHA384())
    bad = tmp_path / "other.csr.pem"
    bad.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    files = tree(out)
    proc = _invoke("ceremony.sign-subordinate", "--ca", "qualified", "--csr", str(bad), "--definition",
                   str(defn_path), "--out", str(out), "--rehearsal")
    _refused(proc, "CSR key: the CSR key (", f"is not the key of {out / 'qualified.pub.pem'}")
    assert tree(out) == files


def test_definition_changed_between_ceremonies_is_shown_and_both_kept(tmp_path: Path,
                                                                    definition_on_tokens: Any) -> None:
    """The spki_sha256 pin filled in after the subordinate key ceremony: shown to the witness before sign-in,
    and the signing ceremony keeps the new version beside the old instead of refusing after signing."""
    from ceremony.ceremonies.root_key import root_ceremony
    from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
    from ceremony.transcript.recorder import ConsoleRecorder

    defn_path, _ = definition_on_tokens()
    out = tmp_path / "out"
    defn = load_definition(defn_path)
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    result = subordinate_key_ceremony(defn, "qualified", out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                                      interactive=False)
    text = defn_path.read_text(encoding="utf-8")
    marker = "  qualified:\n"
    assert marker in text
    defn_path.write_text(text.replace(marker, marker + f"    spki_sha256: {result.key_spki_sha256}\n", 1),
                         encoding="utf-8")
    report = run_preflight(load_definition(defn_path), "subordinate-signing", out, rehearsal=True, ca="qualified",
                           csr=out / "qualified.csr.pem", interactive=False)
    assert report.ok, [f.line() for f in report.problems]
    note = next(f for f in report.findings if f.check == "definition" and f.warning)
    assert "cas.qualified.spki_sha256" in note.detail and "Both versions are kept" in note.detail
    proc = _invoke("ceremony.sign-subordinate", "--ca", "qualified", "--csr", str(out / "qualified.csr.pem"),
                   "--definition", str(defn_path), "--out", str(out), "--rehearsal")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    kept = {p.name for p in out.glob("pki*.yml")}
    assert kept == {"pki.yml", f"pki.{load_definition(defn_path).sha256[:16]}.yml"}
    transcript = max((out / "transcripts").glob("subordinate-signing-*.jsonl"))
    audit = _invoke("audit.verify", str(transcript), "--artifacts", str(out), "--trust", str(out / "root.crt.pem"),
                    "--rehearsal")
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.parametrize("problem", ["outputs-exist", "other-environment", "rehearsal-dir"])
def test_output_directory_problems(tmp_path: Path, definition_on_tokens: Any, problem: str) -> None:
    defn, _ = definition_on_tokens()
    out = tmp_path / "out"
    out.mkdir()
    expected: tuple[str, ...]
    if problem == "outputs-exist":
        (out / "root.crt.pem").write_text("earlier")
        expected = ("root.crt.pem exist already; outputs are never overwritten",)
    elif problem == "other-environment":
        (out / "pki.yml").write_text("version: 1\nenvironment: production\n")
        expected = ("holds the outputs of environment 'production'",)
    else:
        (out / "manifest.json").write_text('{"rehearsal": false, "artifacts": []}')
        expected = ("holds production outputs; rehearsal and production never mix",)
    files = tree(out)
    _refused(_root(defn, out), *expected)
    assert tree(out) == files and _objects(defn) == 0


def test_every_problem_at_once_is_listed_with_its_fix(tmp_path: Path, definition_on_tokens: Any,
                                                      make_token: Callable[[str], Any]) -> None:
    """The operator fixes everything in one go, not one problem per ceremony attempt."""
    def mutate(d: dict[str, Any]) -> None:
        d["cas"]["root"]["hsm"]["module"] = "/nonexistent/module.so"
    defn, _ = definition_on_tokens(mutate)
    out = tmp_path / "out"
    out.mkdir()
    (out / "root.crt.der").write_text("x")
    proc = _root(defn, out)
    _refused(proc, "2 problem(s)", "PKCS#11 module not found", "root.crt.der exist already")
