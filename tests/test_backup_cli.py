"""The rehearsal's key-backup stage and ``invoke backup.*`` as the operator runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.hsm
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF", "TEST_PIN"))}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, env={**clean, **(env or {})},
                          timeout=600)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rehearsal reduced to the CA ceremonies and this stage, run exactly as ``invoke rehearse`` runs
    them (same context, tokens, PINs file and transcripts) but without the other stages, to stay fast.
    ``tests/test_rehearsal.py`` runs the complete ``invoke rehearse``."""
    out = tmp_path_factory.mktemp("backup-rehearsal") / "out"
    code = ("import sys; from ceremony.rehearsal.context import prepare; "
            "from ceremony.rehearsal.ca import ca_ceremonies; "
            "from ceremony.rehearsal.backup import rehearse; "
            "ctx = prepare(sys.argv[1]); ca_ceremonies(ctx); rehearse(ctx)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF", "TEST_PIN"))}
    result = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code, str(out)], cwd=REPO, env=clean,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def rehearsal_env(out: Path) -> dict[str, str]:
    pins = dict(line.split("=", 1) for line in (out / "hsm" / "rehearsal-pins.env").read_text().splitlines())
    return {"SOFTHSM2_CONF": str(out / "hsm" / "softhsm2.conf"), **pins}


def test_rehearsal_backs_up_the_root_and_restores_it_on_a_second_token(rehearsal: Path) -> None:
    manifest = json.loads((rehearsal / "manifest.json").read_text())
    by_kind: dict[str, list[str]] = {}
    for a in manifest["artifacts"]:
        by_kind.setdefault(a["kind"], []).append(a["path"])
    assert by_kind["key-backup"] == ["backup/root.key-backup.json"]
    assert len(by_kind["key-backup-share"]) == 3
    assert by_kind["key-restore-report"] == ["backup/root.restore-scse-test-root-restore.json"]
    for path in by_kind["key-backup-share"]:
        assert stat.S_IMODE((rehearsal / path).stat().st_mode) == 0o600
    report = json.loads((rehearsal / "backup/root.restore-scse-test-root-restore.json").read_text())
    assert report["rehearsal"] is True and report["restored_key"]["local"] is False
    assert len(report["shares"]) == 2 and all(s["bag"].startswith("REHEARSAL-") for s in report["shares"])
    transcripts = [a for a in manifest["artifacts"] if a["kind"] == "transcript"]
    names = {Path(a["path"]).name for a in transcripts}
    if transcripts:  # the transcript module is installed: one transcript per ceremony, named for it
        assert {"key-backup-1.jsonl", "key-restore-1.jsonl"} <= names
        for name in ("key-backup-1.jsonl", "key-restore-1.jsonl"):
            text = (rehearsal / "transcripts" / name).read_text()
            for share in by_kind["key-backup-share"]:
                value = "".join(line.split(":", 1)[1].replace(" ", "") for line in
                                (rehearsal / share).read_text().split("value:")[1].split("checksum:")[0]
                                .strip().splitlines())
                assert value not in text


def test_cli_restore_with_too_few_shares_exits_with_one_line(rehearsal: Path, tmp_path: Path) -> None:
    """A fresh target token that passes the pre-flight; one share of the two needed: one line, nothing written."""
    share = sorted((rehearsal / "backup").glob("root.share-*.txt"))[0]
    pin = secrets.token_hex(8)
    _init_token(rehearsal, "few-shares", pin, secrets.token_hex(8))
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    result = invoke("backup.restore", "--rehearsal", "--ca", "root", "--definition", str(rehearsal / "pki.yml"),
                    "--out", str(tmp_path / "out"), "--backup", str(rehearsal / "backup/root.key-backup.json"),
                    "--share", str(share), "--certificate", str(rehearsal / "root.crt.pem"),
                    "--target-token", "few-shares", "--pin-file", str(pin_file), env=rehearsal_env(rehearsal))
    assert result.returncode == 8, result.stdout[-2000:] + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 share(s) presented, the backup needs 2 of 3" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "backup").exists()


def test_cli_restore_onto_a_token_that_holds_the_key_already_is_refused_before_sign_in(rehearsal: Path,
                                                                                          tmp_path: Path) -> None:
    """The rehearsal's restore token holds the key: the pre-flight says so (and that its PIN is not the root
    variable's) before the custodians present their shares."""
    shares = sorted((rehearsal / "backup").glob("root.share-*.txt"))[:2]
    result = invoke("backup.restore", "--rehearsal", "--ca", "root", "--definition", str(rehearsal / "pki.yml"),
                    "--out", str(tmp_path / "out"), "--backup", str(rehearsal / "backup/root.key-backup.json"),
                    *(x for s in shares for x in ("--share", str(s))), "--certificate", str(rehearsal / "root.crt.pem"),
                    "--target-token", "scse-test-root-restore", env=rehearsal_env(rehearsal))
    assert result.returncode == 13, result.stdout[-2000:] + result.stderr
    assert "token label 'scse-test-root-restore'" in result.stderr and "Sign-in" not in result.stdout
    assert not (tmp_path / "out" / "transcripts").exists()


def test_cli_bag_option_is_checked_before_anything_runs(rehearsal: Path, tmp_path: Path) -> None:
    result = invoke("backup.create", "--rehearsal", "--ca", "root", "--definition", str(rehearsal / "pki.yml"),
                    "--out", str(tmp_path), "--bag", "no-serial-here", env=rehearsal_env(rehearsal))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --bag: no-serial-here: not of the form NAME=SERIAL (allowed: --bag "
                                     "'Aminata Diarra=SN-000123')")
    assert list(tmp_path.iterdir()) == []


def test_audit_verify_passes_on_the_backup_and_restore_transcripts(rehearsal: Path) -> None:
    for name in ("key-backup-1.jsonl", "key-restore-1.jsonl"):
        result = invoke("audit.verify", str(rehearsal / "transcripts" / name), "--artifacts", str(rehearsal),
                        "--trust", str(rehearsal / "root.crt.pem"), "--rehearsal")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "INTACT" in result.stdout


def _init_token(out: Path, label: str, user_pin: str, so_pin: str) -> None:
    """A new token in the rehearsal's SoftHSM, initialised in a subprocess (PINs through the environment)."""
    code = ("import os; from pathlib import Path; from ceremony.hsm import softhsm; "
            "softhsm.init_token(Path(os.environ['SOFTHSM2_CONF']), os.environ['LABEL'], os.environ['U'], "
            "os.environ['S'])")
    env = {**rehearsal_env(out), "LABEL": label, "U": user_pin, "S": so_pin, "PATH": os.environ.get("PATH", "")}
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)


def test_cli_backup_then_restore_onto_a_new_token_and_audit(rehearsal: Path, tmp_path: Path) -> None:
    """The operator's path: backup.create, then backup.restore with two share files and a PIN file."""
    out = tmp_path / "ops"
    out.mkdir()
    shutil.copyfile(rehearsal / "root.crt.pem", out / "root.crt.pem")
    shutil.copyfile(rehearsal / "root.seal.crt.pem", out / "root.seal.crt.pem")  # what seals the transcripts
    env = rehearsal_env(rehearsal)
    created = invoke("backup.create", "--rehearsal", "--ca", "root", "--definition", str(rehearsal / "pki.yml"),
                     "--out", str(out), env=env)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-2000:]
    shares = sorted((out / "backup").glob("root.share-*.txt"))
    assert len(shares) == 3 and all(stat.S_IMODE(s.stat().st_mode) == 0o600 for s in shares)
    pin = secrets.token_hex(8)
    _init_token(rehearsal, "cli-restore", pin, secrets.token_hex(8))
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    restored = invoke("backup.restore", "--rehearsal", "--ca", "root", "--definition", str(rehearsal / "pki.yml"),
                      "--out", str(out), "--backup", str(out / "backup" / "root.key-backup.json"),
                      "--share", str(shares[2]), "--share", str(shares[0]), "--target-token", "cli-restore",
                      "--pin-file", str(pin_file), env=env)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]
    report = json.loads((out / "backup" / "root.restore-cli-restore.json").read_text())
    assert [s["index"] for s in report["shares"]] == [3, 1] and report["restored_key"]["local"] is False
    transcripts = sorted((out / "transcripts").glob("key-*.jsonl"))
    assert [t.name.split("-2")[0] for t in transcripts] == ["key-backup", "key-restore"]
    for transcript in transcripts:
        result = invoke("audit.verify", str(transcript), "--artifacts", str(out), "--trust", str(out / "root.crt.pem"),
                        "--rehearsal")
        assert result.returncode == 0, transcript.name + result.stdout[-3000:] + result.stderr[-2000:]


def test_restore_refuses_missing_files_before_anyone_signs_in(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "backup.restore", "--ca", "root", "--backup",
                           str(tmp_path / "missing.json"), "--share", str(tmp_path / "s1.txt"), "--env", "testing",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "Sign-in" not in proc.stdout and "missing.json: no such file" in proc.stderr
    assert not out.exists()


def test_recording_addendum_binds_videos_to_a_sealed_transcript(rehearsal: Path, tmp_path: Path) -> None:
    """The video of a ceremony exists only afterwards: ``ceremony.addendum`` hashes it in a short sealed ceremony
    of its own, chained by the ledger; the auditor's verify-all checks the addendum names the transcript as it is."""
    out = tmp_path / "out"
    # the SoftHSM tokens (hsm/tokens) stay where they are; the token records (tokens/, outputs) are copied
    shutil.copytree(rehearsal, out, ignore=lambda d, names: ["tokens"] if Path(d).name == "hsm" else [])
    env = rehearsal_env(rehearsal)
    videos = [tmp_path / "camera-1.mp4", tmp_path / "camera-2.mp4"]
    for i, video in enumerate(videos):
        video.write_bytes(secrets.token_bytes(4096 + i))
    of = out / "transcripts" / "root-key-generation-1.jsonl"
    base = ["ceremony.addendum", "--rehearsal", "--definition", str(out / "pki.yml"), "--out", str(out)]
    manifest = (out / "manifest.json").read_bytes()
    # bad input first: one message, nothing written
    for args, message in (
            (["--of", str(tmp_path / "nowhere.jsonl"), "--recording", str(videos[0])],
             "the transcript of the recorded ceremony is not there"),
            (["--of", str(of), "--recording", str(tmp_path / "missing.mp4")], "the recording is not there"),
            (["--of", str(of), "--recording", str(videos[0]), "--recording", str(videos[0])], "given twice")):
        refused = invoke(*base, *args, env=env)
        assert refused.returncode != 0 and message in refused.stdout + refused.stderr, refused.stdout[-2000:]
        assert (out / "manifest.json").read_bytes() == manifest
        assert not list((out / "transcripts").glob("recording-addendum-*.jsonl"))
    done = invoke(*base, "--of", str(of), *[a for v in videos for a in ("--recording", str(v))], env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    addendum = next((out / "transcripts").glob("recording-addendum-*.jsonl"))
    records = [json.loads(line) for line in addendum.read_text().splitlines()]
    recorded = [r["data"] for r in records if r["type"] == "evidence" and r["name"] == "recording"]
    assert [(r["file"], r["sha256"]) for r in recorded] == [
        (v.name, subprocess.run(["sha256sum", str(v)], capture_output=True, text=True, check=True).stdout.split()[0])
        for v in videos]
    assert {r["of"] for r in recorded} == {"root-key-generation-1.jsonl"}
    assert records[-1]["verifier"]["path"] == "root.seal.crt.pem"
    assert records[0]["ledger"]["previous"]["file"] != "-"  # chained after the directory's last ceremony
    listing = json.loads((out / "transcripts" / "root-key-generation-1.recordings.json").read_text())
    assert [r["sha256"] for r in listing["recordings"]] == [r["sha256"] for r in recorded]
    verified = invoke("audit.verify", str(addendum), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert verified.returncode == 0, verified.stdout
    every = invoke("audit.verify-all", str(out), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert every.returncode == 0, every.stdout[-3000:]
