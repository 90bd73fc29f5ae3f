"""Health, not silence, on the converged test hosts (``conftest.converged``): the CRL job and its alerts.

While no CRL is due, the PIN file on the CA host is made 0644 and the unit's command is run as the
timer would (its ``User=``, its ``Environment=``, its ``ExecStart=``): the job fails with one line, its
metrics say ``x509_crl_last_run_success 0`` with the reason and keep the last success time, and the
alert rules installed on the host, fed those very samples, fire (``promtool test rules`` on the
controller). The cron entry's command sends the same line to syslog (a listener on the host's
``/dev/log``) and keeps the exit status. The file is restored and the next run recovers. A wrong PIN
sets the latch, which holds until the documented command clears it. The published CRL is probed
over HTTP by the probe installed on the CA host, run as its cron entry is. The hosts have no
systemd as PID 1: units are checked with ``systemd-analyze verify`` and their commands run directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Lab, PlaybookRun

pytestmark = pytest.mark.infra

CA = "qualified"
CA_USER = "ceremony-ca"
PIN_FILE = f"/etc/ceremony/{CA}.pin"
METRICS = f"/var/lib/prometheus/node-exporter/ceremony_crl_{CA}.prom"
SIGN_UNIT = f"/etc/systemd/system/ceremony-crl-sign@{CA}"
PROBE_UNIT = f"/etc/systemd/system/ceremony-crl-probe@{CA}"
RULES = "/etc/prometheus/rules/ceremony-pki.rules.yml"
SIGNED_CRL = f"/var/lib/ceremony/crl/{CA}.crl"
LATCH = f"/var/lib/ceremony/crl/.state/{CA}.pin-failed"
SCRAPE = {"instance": "subca:9100", "job": "node"}  # what Prometheus adds when it scrapes node-exporter


def parse_prom(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a textfile: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    return next((v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())), None)


def unit_command(host: Any, unit: str) -> tuple[str, str]:
    """``(user, command)``: the service's ExecStart with its Environment= in front, as systemd would run it."""
    text = host.file(unit).content_string
    settings = [line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")]
    user = next((v for k, v in settings if k == "User"), "root")
    env = " ".join(v for k, v in settings if k == "Environment")
    command = next(v for k, v in settings if k == "ExecStart")
    return user, f"{env} {command}".strip()


def run_as_timer(host: Any) -> Any:  # -> testinfra CommandResult
    user, command = unit_command(host, SIGN_UNIT + ".service")
    return host.run("su -s /bin/sh %s -c %s", user, command)


def metrics(lab: Lab) -> list[tuple[str, dict[str, str], float]]:
    return parse_prom(lab.host("subca").file(METRICS).content_string)


@contextlib.contextmanager
def syslog_listener(lab: Lab) -> Iterator[list[str]]:
    """A datagram socket at the CA host's /dev/log (the test hosts run no syslog daemon): what is logged there.

    Read continuously by a thread: a datagram socket nobody reads blocks its writers (su and sshd log
    there too) once its queue is full.
    """
    import threading

    path = lab.th.host_root("subca") / "dev" / "log"
    received: list[str] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock.bind(str(path))
    path.chmod(0o666)
    sock.settimeout(0.1)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                received.append(sock.recv(65536).decode("utf-8", "replace"))
            except TimeoutError:
                continue
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield received
    finally:
        time.sleep(0.3)
        stop.set()
        reader.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.close()


def promtool_series(samples: list[tuple[str, dict[str, str], float]], now: float, at: int,
                    minutes: int) -> list[dict[str, str]]:
    """The samples as constant promtool input series, labelled as a scrape would, and with every epoch
    timestamp moved so that real ``now`` is the test's ``at`` seconds (promtool's ``time()`` starts at 0)."""
    series = []
    for name, labels, v in samples:
        if name.endswith(("_timestamp_seconds", "_update_seconds")):
            v = v - now + at
        text = ",".join(f'{k}="{x}"' for k, x in {**labels, **SCRAPE}.items())
        series.append({"series": f"{name}{{{text}}}", "values": f"{v!r}x{minutes}"})
    return series


def promtool_test(rules: Path, tmp: Path, series: list[dict[str, str]],
                  cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    shutil.copy(rules, tmp / "rules.yml")
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}]}
    (tmp / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    return subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp, capture_output=True, text=True,
                          timeout=60)


def test_units_docs_rules_and_probe_are_installed(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("subca")
    units = " ".join(f"{u}.{kind}" for u in (SIGN_UNIT, PROBE_UNIT) for kind in ("service", "timer"))
    verify = host.run(f"systemd-analyze verify {units}")
    assert verify.rc == 0 and verify.stderr.strip() == "", verify.stderr
    service = host.file(SIGN_UNIT + ".service").content_string
    # Documentation= names files that are on the host.
    docs = re.search(r"^Documentation=(.*)$", service, re.M).group(1).split()
    assert docs == ["file:///usr/share/doc/ceremony-suite/crl.md", "file:///usr/share/doc/ceremony-suite/monitoring.md"]
    for url in docs:
        assert host.file(url.removeprefix("file://")).is_file
    # SoftHSM on the test hosts (softhsm_enabled): its group and token directory, and nothing else of it.
    assert "SupplementaryGroups=softhsm" in service and "/var/lib/softhsm/tokens" in service
    # Cron entries (no systemd as PID 1 here) send their lines to syslog.
    for entry in (f"/etc/cron.d/ceremony-crl-sign-{CA}", f"/etc/cron.d/ceremony-crl-probe-{CA}"):
        line = host.file(entry).content_string.strip().splitlines()[-1]
        assert line.endswith(" --syslog"), line
    # The rules are on the host and promtool (on the controller) accepts them.
    rules = lab.th.host_root("subca") / RULES.lstrip("/")
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # The textfile directory: the job's, writable by the probe's group, sticky; the probe cannot read the PIN.
    textfile = host.file("/var/lib/prometheus/node-exporter")
    assert textfile.user == CA_USER and textfile.group == "ceremony-metrics" and textfile.mode == 0o1775
    assert host.run("su -s /bin/sh ceremony-probe -c 'cat %s'", PIN_FILE).rc != 0
    assert host.file(f"/var/lib/ceremony-probe/{CA}.crt.pem").is_file
    # The first CRL, signed by the crl_sign module at provisioning, wrote the job's metrics.
    first = metrics(lab)
    assert value(first, "x509_crl_last_run_success", ca=CA) == 1
    assert value(first, "x509_crl_number", ca=CA) is not None
    assert value(first, "x509_crl_last_success_timestamp_seconds", ca=CA) is not None


def test_a_0644_pin_file_fails_every_run_and_the_alert_would_fire_then_recovery(converged: PlaybookRun, lab: Lab,
                                                                               tmp_path: Path) -> None:
    host = lab.host("subca")
    healthy = run_as_timer(host)
    assert healthy.rc == 0, healthy.stderr
    assert "is current; nothing signed" in healthy.stdout, "this test needs a CRL that is not due"
    before = metrics(lab)
    last_success = value(before, "x509_crl_last_success_timestamp_seconds", ca=CA)
    number = value(before, "x509_crl_number", ca=CA)
    crl_sha = host.file(SIGNED_CRL).sha256sum
    pin = lab.env["CEREMONY_QUALIFIED_PIN"]
    try:
        host.check_output("chmod 0644 %s", PIN_FILE)
        time.sleep(1.1)
        failed = run_as_timer(host)
        assert failed.rc == 3, (failed.rc, failed.stdout, failed.stderr)
        assert failed.stdout == "" and failed.stderr.splitlines() == [
            f"error: {PIN_FILE}: PIN file has mode 0644; it must be 0600 (readable by its owner only)"]
        after = metrics(lab)
        assert value(after, "x509_crl_last_run_success", ca=CA) == 0
        assert value(after, "x509_crl_last_run_failure", ca=CA, reason="pin_source") == 1
        assert value(after, "x509_crl_last_success_timestamp_seconds", ca=CA) == last_success  # kept
        assert value(after, "x509_crl_last_run_timestamp_seconds", ca=CA) > last_success
        assert value(after, "x509_crl_number", ca=CA) == number and value(after, "x509_crl_pin_latch", ca=CA) == 0
        assert host.file(SIGNED_CRL).sha256sum == crl_sha
        assert pin not in failed.stdout + failed.stderr + host.file(METRICS).content_string

        # The cron entry's command, as cron runs it: same failure, the line in syslog at priority err.
        cron = host.file(f"/etc/cron.d/ceremony-crl-sign-{CA}").content_string.strip().splitlines()[-1]
        command = cron.split(f" {CA_USER} ", 1)[1]
        with syslog_listener(lab) as received:
            by_cron = host.run("su -s /bin/sh %s -c %s", CA_USER, command)
        assert by_cron.rc == 3, by_cron.stderr
        logged = [m for m in received if f"ceremony-crl-sign@{CA}" in m]
        assert len(logged) == 1 and logged[0].startswith("<27>"), received  # daemon.err
        assert logged[0].rstrip("\n").endswith(f"error: {PIN_FILE}: PIN file has mode 0644; it must be 0600 "
                                              "(readable by its owner only)")

        # The rules installed on the host, fed these samples, fire; the last success is kept, so the
        # "too old" alert comes only hours later, as it should.
        now = time.time()
        samples = metrics(lab)
        rules = lab.th.host_root("subca") / RULES.lstrip("/")
        series = promtool_series(samples, now, 300, 420)
        labels = {"ca": CA, **SCRAPE}
        cases = [
            {"eval_time": "5m", "alertname": "CrlJobLastRunFailed", "exp_alerts": [{
                "exp_labels": {**labels, "severity": "warning"},
                "exp_annotations": {
                    "summary": f"The CRL job of CA {CA} failed on subca:9100",
                    "description": f"The last run of ceremony-crl-sign for CA {CA} failed, reason pin_source. Its "
                                   f"message: journalctl -u ceremony-crl-sign@{CA} (or -t ceremony-crl-sign@{CA} "
                                   "in syslog under cron)."}}]},
            {"eval_time": "5m", "alertname": "CrlPinLatchSet", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "CrlLastSuccessTooOld", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "CrlExpiresVerySoon", "exp_alerts": []},
        ]
        fired = promtool_test(rules, tmp_path, series, cases)
        assert fired.returncode == 0, fired.stdout + fired.stderr
    finally:
        host.run("chmod 0600 %s", PIN_FILE)
    recovered = run_as_timer(host)
    assert recovered.rc == 0 and "is current; nothing signed" in recovered.stdout, recovered.stderr
    healed = metrics(lab)
    assert value(healed, "x509_crl_last_run_success", ca=CA) == 1
    assert value(healed, "x509_crl_last_success_timestamp_seconds", ca=CA) > last_success
    assert not [s for s in healed if s[0] == "x509_crl_last_run_failure"]
    quiet = promtool_test(lab.th.host_root("subca") / RULES.lstrip("/"), tmp_path,
                          promtool_series(healed, time.time(), 300, 10),
                          [{"eval_time": "5m", "alertname": name, "exp_alerts": []}
                           for name in ("CrlJobLastRunFailed", "CrlLastSuccessTooOld", "CrlJobNotRunning",
                                        "CrlExpiresSoon", "CrlPinLatchSet")])
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr


def test_a_wrong_pin_latches_until_the_documented_command_clears_it(converged: PlaybookRun, lab: Lab) -> None:
    host = lab.host("subca")
    pin = lab.env["CEREMONY_QUALIFIED_PIN"]
    saved = host.file(PIN_FILE).sha256sum
    assert saved == hashlib.sha256((pin + "\n").encode()).hexdigest()
    try:
        host.check_output("printf '%%s\\n' %s > %s", "0" + pin[::-1], PIN_FILE)
        wrong = run_as_timer(host)
        assert wrong.rc == 3 and "wrong PIN for token label 'scse-test-qualified'" in wrong.stderr, wrong.stderr
        assert host.file(LATCH).is_file and host.file(LATCH).user == CA_USER
        assert value(metrics(lab), "x509_crl_pin_latch", ca=CA) == 1
        assert value(metrics(lab), "x509_crl_last_run_failure", ca=CA, reason="pin_incorrect") == 1
        host.check_output("printf '%%s\\n' %s > %s", pin, PIN_FILE)
        held = run_as_timer(host)
        assert held.rc == 3 and "not tried again until an operator" in held.stderr, held.stderr
        assert value(metrics(lab), "x509_crl_last_run_failure", ca=CA, reason="pin_latched") == 1
        assert pin not in wrong.stderr + held.stderr + host.file(LATCH).content_string
        # docs/monitoring.md, "The PIN latch", as a sysadmin types it.
        cleared = host.run("su -s /bin/sh ceremony-ca -c 'ceremony-crl-sign --clear-pin-latch --ca qualified "
                           "--out /var/lib/ceremony/crl'")
        assert cleared.rc == 0 and "PIN latch of 'qualified' cleared" in cleared.stdout, cleared.stderr
        again = run_as_timer(host)
        assert again.rc == 0 and "is current; nothing signed" in again.stdout, again.stderr
        assert value(metrics(lab), "x509_crl_pin_latch", ca=CA) == 0
    finally:
        host.run("printf '%%s\\n' %s > %s && chown %s: %s && chmod 0600 %s", pin, PIN_FILE, CA_USER, PIN_FILE,
                 PIN_FILE)
        host.run("rm -f %s", LATCH)
    assert host.file(PIN_FILE).sha256sum == saved


#: The publishers as the CA host reaches them (inventory/testing/host_vars/subca.yml: monitoring_crl_probe_publishers).
PROBE_PUBLISHERS = ("203.0.113.14", "203.0.113.18")


def probe_cron_command(host: Any) -> tuple[str, str]:
    """``(user, command)`` of the probe's cron entry, exactly as installed."""
    line = host.file(f"/etc/cron.d/ceremony-crl-probe-{CA}").content_string.strip().splitlines()[-1]
    fields = line.split(None, 6)
    return fields[5], fields[6]


def test_the_installed_probe_checks_what_relying_parties_get(converged: PlaybookRun, lab: Lab) -> None:
    """The probe's cron entry, run on the CA host as it is installed (its user, its command line: the publishers'
    addresses come from the inventory, none is added here): every publisher answers with a valid CRL."""
    host = lab.host("subca")
    user, command = probe_cron_command(host)
    assert user == "ceremony-probe" and command.endswith(" --syslog")
    assert [a for a in command.split() if a in PROBE_PUBLISHERS] == list(PROBE_PUBLISHERS), command
    prom = f"/var/lib/prometheus/node-exporter/ceremony_crl_probe_{CA}.prom"
    host.run("rm -f %s", prom)
    with syslog_listener(lab) as logged:
        proc = host.run("su -s /bin/sh %s -c %s", user, command)
    assert proc.rc == 0, proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) == len(PROBE_PUBLISHERS) and proc.stderr.strip() == "", proc.stdout
    assert sum(f"ceremony-crl-probe@{CA}" in m for m in logged) == len(PROBE_PUBLISHERS), logged
    samples = parse_prom(host.file(prom).content_string)
    signed = value(metrics(lab), "x509_crl_number", ca=CA)
    assert signed is not None
    for address in PROBE_PUBLISHERS:
        assert value(samples, "x509_crl_probe_success", publisher=address) == 1
        assert value(samples, "x509_crl_probe_http_status", publisher=address) == 200
        assert value(samples, "x509_crl_probe_signature_ok", publisher=address) == 1
        number = value(samples, "x509_crl_probe_number", publisher=address)
        assert number is not None and number <= signed
