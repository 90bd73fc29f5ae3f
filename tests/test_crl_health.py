"""Health, not silence: the hourly CRL job checks what signing needs on every run, on real SoftHSM tokens.

Each test publishes CRL 1 with the role's exact command line (PIN from a 0600 file, metrics to a
textfile directory), then breaks one thing while *no CRL is due* and runs the same command again, as
the timer would: a 0644 PIN file, no PIN at all, a missing or unloadable PKCS#11 module, a missing
token, a missing key, a key that is not the CA certificate's, a wrong PIN (latch, refusal until an
operator clears it). Each time: a non-zero exit with one ``error:`` line, ``x509_crl_last_run_success 0``
with the labelled reason, the last success time carried over, the published CRL untouched, and the
PIN nowhere in the output, the metrics or the latch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_definition
from test_crl_job import Pki, build_pki

from ceremony.common import child_process
from ceremony.common.errors import HsmError

pytestmark = pytest.mark.hsm
CA = "qualified"
COMMAND = str(Path(sys.executable).parent / "ceremony-crl-sign")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("health-pki"))


def parse_metrics(path: Path) -> dict[str, float]:
    """``{'name{labels}': value}`` of a textfile; every line must be a comment or one sample."""
    samples: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) x509_crl_\w+ .+", line), line
            continue
        m = re.fullmatch(r'(x509_crl_\w+\{(?:\w+="[^"]*",?)+\}) (-?[0-9.e+]+)', line)
        assert m, f"not a sample: {line!r}"
        samples[m.group(1)] = float(m.group(2))
    return samples


class Job:
    """One CA's job as the role installs it: definition, registry, publication, PIN file, metrics."""

    def __init__(self, pki: Pki, base: Path) -> None:
        self.pki = pki
        self.base = base
        self.registry = pki.copy_registry(base / "reg")
        self.out = base / "crl"
        self.metrics = base / "metrics"
        self.definition = pki.definition
        self.ca_cert = pki.dir / "qualified.crt.pem"
        data = yaml.safe_load(pki.definition.read_text())
        self.pin_env = data["cas"][CA]["hsm"]["pin_env"]
        self.pin = os.environ[self.pin_env]
        self.pin_file = base / "qualified.pin"
        self.pin_file.write_text(self.pin + "\n")
        self.pin_file.chmod(0o600)

    @property
    def metrics_file(self) -> Path:
        return self.metrics / f"ceremony_crl_{CA}.prom"

    def argv(self, *extra: str, pin_file: bool = True) -> list[str]:
        args = [COMMAND, "--definition", str(self.definition), "--ca", CA, "--registry", str(self.registry),
                "--out", str(self.out), "--ca-cert", str(self.ca_cert), "--metrics-dir", str(self.metrics)]
        return args + (["--pin-file", str(self.pin_file)] if pin_file else []) + list(extra)

    def run(self, *extra: str, pin_file: bool = True, env: dict[str, str] | None = None) \
            -> subprocess.CompletedProcess[str]:
        """The command as the timer runs it: the PIN only in the file, not in the environment."""
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_CRL_PIN_")}
        return subprocess.run(self.argv(*extra, pin_file=pin_file), capture_output=True, text=True,
                              env={**base_env, **(env or {})}, timeout=120)

    def published(self) -> bytes:
        return (self.out / "qualified.crl").read_bytes()

    def sample(self, name: str, **labels: str) -> float | None:
        key = name + "{" + ",".join(f'{k}="{v}"' for k, v in {"ca": CA, **labels}.items()) + "}"
        return parse_metrics(self.metrics_file).get(key)

    def everything_written(self) -> str:
        """Every file the job wrote (publication, state, latch, metrics) as text, to look for the PIN."""
        files = [p for d in (self.out, self.metrics) if d.exists() for p in d.rglob("*") if p.is_file()]
        return "\n".join(p.read_bytes().decode("latin-1") for p in files)


def start(pki: Pki, tmp_path: Path) -> Job:
    """CRL 1 published and a healthy not-due run after it: the baseline every failure is compared with."""
    j = Job(pki, tmp_path)
    first = j.run()
    assert first.returncode == 0, first.stderr
    assert "CRL 1 of 'qualified' signed and published" in first.stdout
    time.sleep(1.1)  # the next run's timestamps differ from the first's
    healthy = j.run()
    assert healthy.returncode == 0, healthy.stderr
    assert "is current; nothing signed" in healthy.stdout and healthy.stderr == ""
    assert j.sample("x509_crl_last_run_success") == 1 and j.sample("x509_crl_pin_latch") == 0
    return j


def assert_failed_run(j: Job, run: subprocess.CompletedProcess[str], reason: str, *, last_success: float,
                      crl: bytes, exit_code: int = HsmError.exit_code) -> str:
    """Exit status, one line, metrics with the reason and the carried-over success, CRL untouched, no PIN."""
    assert run.returncode == exit_code, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == "" and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert j.sample("x509_crl_last_run_success") == 0
    assert j.sample("x509_crl_last_run_failure", reason=reason) == 1, j.metrics_file.read_text()
    assert [k for k in parse_metrics(j.metrics_file) if k.startswith("x509_crl_last_run_failure")] == \
        [f'x509_crl_last_run_failure{{ca="{CA}",reason="{reason}"}}']
    assert j.sample("x509_crl_last_success_timestamp_seconds") == last_success, "the last success was not kept"
    assert j.sample("x509_crl_last_run_timestamp_seconds") > last_success
    assert j.sample("x509_crl_number") == 1 and j.sample("x509_crl_next_update_seconds") is not None
    assert j.published() == crl, "the published CRL changed"
    assert j.pin not in run.stdout + run.stderr + j.everything_written()
    return run.stderr


def test_pin_file_with_mode_0644_fails_every_run_while_no_crl_is_due(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    j.pin_file.chmod(0o644)
    message = assert_failed_run(j, j.run(), "pin_source", last_success=last_success, crl=crl)
    assert f"{j.pin_file}: PIN file has mode 0644; it must be 0600" in message
    # A second failed run still carries the last success (from a file that was itself a failure).
    time.sleep(1.1)
    assert_failed_run(j, j.run(), "pin_source", last_success=last_success, crl=crl)
    j.pin_file.chmod(0o600)
    healthy = j.run()
    assert healthy.returncode == 0 and "is current; nothing signed" in healthy.stdout, healthy.stderr
    assert j.sample("x509_crl_last_run_success") == 1
    assert j.sample("x509_crl_last_success_timestamp_seconds") > last_success
    assert not [k for k in parse_metrics(j.metrics_file) if k.startswith("x509_crl_last_run_failure")]


def test_no_pin_source_at_all(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    message = assert_failed_run(j, j.run(pin_file=False), "pin_source", last_success=last_success, crl=crl)
    assert f"no PIN available: set environment variable {j.pin_env}" in message


def _variant(j: Job, tmp_path: Path, change: Any) -> Path:
    data = yaml.safe_load(j.pki.definition.read_text())
    change(data["cas"][CA]["hsm"])
    return write_definition(tmp_path / "variant.yml", data)


def test_missing_module(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    j.definition = _variant(j, tmp_path, lambda hsm: hsm.update(module="/usr/lib/vendor/libmissing-pkcs11.so"))
    message = assert_failed_run(j, j.run(), "module", last_success=last_success, crl=crl)
    assert "PKCS#11 module not found: /usr/lib/vendor/libmissing-pkcs11.so" in message


def test_module_that_does_not_load(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    broken = tmp_path / "libbroken.so"
    broken.write_bytes(b"not a shared object\n" * 50)
    j.definition = _variant(j, tmp_path, lambda hsm: hsm.update(module=str(broken)))
    message = assert_failed_run(j, j.run(), "module", last_success=last_success, crl=crl)
    assert f"PKCS#11 module {broken} could not be loaded" in message


def test_missing_token(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    j.definition = _variant(j, tmp_path, lambda hsm: hsm.update(token={"label": "unplugged-token"}))
    message = assert_failed_run(j, j.run(), "token", last_success=last_success, crl=crl)
    assert "token not found: token label 'unplugged-token'" in message


def test_missing_key(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    j.definition = _variant(j, tmp_path, lambda hsm: hsm.update(key_label="qualified-2099"))
    message = assert_failed_run(j, j.run(), "key_missing", last_success=last_success, crl=crl)
    assert "no private key labelled 'qualified-2099'" in message


def test_key_not_matching_the_ca_certificate(pki: Pki, tmp_path: Path) -> None:
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    j.ca_cert = pki.dir / "root.crt.pem"  # a CA certificate that may sign CRLs, but of another key
    message = assert_failed_run(j, j.run(), "key_mismatch", last_success=last_success, crl=crl)
    assert f"is not the key of the CA certificate {pki.dir / 'root.crt.pem'}" in message


def _token_flags(pki: Pki) -> int:
    from ceremony.definition.model import load_definition
    from ceremony.hsm.session import find_token, load_module

    hsm = load_definition(pki.definition).model.cas[CA].hsm
    return int(find_token(load_module(hsm.module), hsm.token).flags)


def test_wrong_pin_sets_the_latch_and_nothing_tries_the_pin_until_it_is_cleared(pki: Pki, tmp_path: Path) -> None:
    from pkcs11.constants import TokenFlag

    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    latch = j.out / ".state" / f"{CA}.pin-failed"
    wrong = "".join(reversed(j.pin)) + "9"
    j.pin_file.write_text(wrong + "\n")
    message = assert_failed_run(j, j.run(), "pin_incorrect", last_success=last_success, crl=crl)
    assert "wrong PIN for token label" in message and f"from file {j.pin_file}" in message
    assert f"ceremony-crl-sign --clear-pin-latch --ca {CA} --out {j.out}" in message
    assert latch.is_file() and latch.stat().st_mode & 0o777 == 0o640
    recorded = json.loads(latch.read_text())
    assert recorded["reason"] == "CKR_PIN_INCORRECT" and recorded["set_at"]
    assert wrong not in latch.read_text() and wrong not in j.metrics_file.read_text() and wrong not in message
    assert j.sample("x509_crl_pin_latch") == 1 and j.sample("x509_crl_pin_latch_timestamp_seconds") > 0
    # SoftHSM marks the token after a wrong PIN; a good login would clear the mark.
    assert _token_flags(pki) & TokenFlag.USER_PIN_COUNT_LOW

    # The PIN file is corrected, but the latch stands: the job refuses without a login (the mark stays).
    j.pin_file.write_text(j.pin + "\n")
    time.sleep(1.1)
    for _ in range(2):
        message = assert_failed_run(j, j.run(), "pin_latched", last_success=last_success, crl=crl)
        assert "not tried again until an operator" in message and "--clear-pin-latch" in message
        assert _token_flags(pki) & TokenFlag.USER_PIN_COUNT_LOW, "the job tried the PIN while latched"
    assert j.sample("x509_crl_pin_latch") == 1
    # Even a forced signing is refused while latched.
    assert_failed_run(j, j.run("--force"), "pin_latched", last_success=last_success, crl=crl)

    # The documented command clears it (only --ca and --out are needed); then one run logs in again.
    cleared = subprocess.run([COMMAND, "--clear-pin-latch", "--ca", CA, "--out", str(j.out)], capture_output=True,
                             text=True)
    assert cleared.returncode == 0, cleared.stderr
    assert f"PIN latch of '{CA}' cleared (set {recorded['set_at'][:19]}Z (CKR_PIN_INCORRECT))" in cleared.stdout
    assert not latch.exists()
    again = subprocess.run([COMMAND, "--clear-pin-latch", "--ca", CA, "--out", str(j.out)], capture_output=True,
                           text=True)
    assert again.returncode == 0 and "nothing to clear" in again.stdout
    healthy = j.run()
    assert healthy.returncode == 0 and "is current; nothing signed" in healthy.stdout, healthy.stderr
    assert j.sample("x509_crl_pin_latch") == 0 and j.sample("x509_crl_last_run_success") == 1
    assert not _token_flags(pki) & TokenFlag.USER_PIN_COUNT_LOW


def test_a_wrong_pin_from_the_variable_latches_too(pki: Pki, tmp_path: Path) -> None:
    """The PIN variable (the definition's pin_env) is a source like the file: one wrong try, then the latch."""
    j = start(pki, tmp_path)
    last_success, crl = j.sample("x509_crl_last_success_timestamp_seconds"), j.published()
    wrong = "0" + j.pin[1:] if not j.pin.startswith("0") else "1" + j.pin[1:]
    run = j.run(pin_file=False, env={j.pin_env: wrong})
    message = assert_failed_run(j, run, "pin_incorrect", last_success=last_success, crl=crl)
    assert f"from environment variable {j.pin_env}" in message and wrong not in message
    latched = j.run(pin_file=False, env={j.pin_env: j.pin})
    assert_failed_run(j, latched, "pin_latched", last_success=last_success, crl=crl)
    subprocess.run([COMMAND, "--clear-pin-latch", "--ca", CA, "--out", str(j.out)], check=True, capture_output=True)
    assert j.run(pin_file=False, env={j.pin_env: j.pin}).returncode == 0


def test_syslog_gets_the_line_with_its_priority_and_the_exit_status_is_the_jobs(pki: Pki, tmp_path: Path) -> None:
    """Under cron (``--syslog``) the result goes to syslog through logger, tag ceremony-crl-sign@<ca>."""
    j = start(pki, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "syslog.jsonl"
    fake = bin_dir / "logger"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read(), "
                    "'env': sorted(os.environ)}) + '\\n')\n")
    fake.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    ok = j.run("--syslog", env={"PATH": path})
    assert ok.returncode == 0
    j.pin_file.chmod(0o640)
    failed = j.run("--syslog", env={"PATH": path})
    assert failed.returncode == HsmError.exit_code
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["argv"][:4] for e in entries] == [["-t", f"ceremony-crl-sign@{CA}", "-p", "daemon.info"],
                                                ["-t", f"ceremony-crl-sign@{CA}", "-p", "daemon.err"]]
    assert "is current; nothing signed" in entries[0]["stdin"]
    assert entries[1]["stdin"] == failed.stderr and "mode 0640" in entries[1]["stdin"]
    # The minimal environment of every child (ceremony.common.child_process), nothing of the job's.
    allowed = {*child_process.PASSED_THROUGH, "LANG", "LC_ALL", "LC_CTYPE"}
    assert all(set(e["env"]) <= allowed for e in entries), [e["env"] for e in entries]
    assert j.pin not in log.read_text()


def test_metrics_carry_the_last_success_over_failed_runs(tmp_path: Path) -> None:
    from ceremony.crl.metrics import CrlMetrics, metrics_path, write_metrics

    write_metrics(tmp_path, CrlMetrics(CA, True, 3, 0, 2e9))
    first = parse_metrics(metrics_path(tmp_path, CA))[f'x509_crl_last_success_timestamp_seconds{{ca="{CA}"}}']
    write_metrics(tmp_path, CrlMetrics(CA, False, failure_reason="registry"))
    write_metrics(tmp_path, CrlMetrics(CA, False, failure_reason="token"))
    samples = parse_metrics(metrics_path(tmp_path, CA))
    assert samples[f'x509_crl_last_success_timestamp_seconds{{ca="{CA}"}}'] == first
    assert samples[f'x509_crl_last_run_failure{{ca="{CA}",reason="token"}}'] == 1
    assert f'x509_crl_last_run_failure{{ca="{CA}",reason="registry"}}' not in samples
    # Never a success: no timestamp is invented.
    write_metrics(tmp_path / "new", CrlMetrics("other", False, failure_reason="module"))
    assert "x509_crl_last_success_timestamp_seconds" not in metrics_path(tmp_path / "new", "other").read_text()
