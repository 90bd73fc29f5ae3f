"""The clock check of the scheduled jobs (:mod:`ceremony.common.clock`), with the real kernel call.

The kernel's answer is read for real (adjtimex with no mode bits: it changes nothing) and checked
against a second, independent system call (ntp_gettimex). An unsynchronised kernel is injected only
as the raw values adjtimex returns (state, status bits, maxerror, esterror in microseconds): the
verdict drawn from them is the code under test, never a stand-in. Then the jobs: the CRL job on a
real SoftHSM token and the publisher refuse with one line, change nothing, and the CRL job's metrics
carry the reason ``clock`` and the clock state. The command-line runs judge this machine's own
clock: on the test machines (virtual machines whose kernel clock no daemon disciplines) the kernel
says TIME_ERROR/STA_UNSYNC and the refusal is the real one; on a synchronised machine the bound is
set below the kernel's own maximum error instead, so the refusal is real there too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_crl_job import Pki, build_pki
from test_crl_publish import Ca
from test_monitoring_rules import (
    alert,
    annotations_of,
    labels_only_as_promql,
    needs_promtool,
    render_rules,
    run_tests,
    series,
)

from ceremony.common import clock
from ceremony.common.clock import (
    STA_CLOCKERR,
    STA_UNSYNC,
    TIME_ERROR,
    TIME_OK,
    ClockError,
    ClockPolicy,
    check_clock,
    host_policy,
    read_kernel_clock,
    resolve_policy,
    status_from_timex,
)
from ceremony.common.errors import DefinitionError, VerificationError
from ceremony.crl import publish as crl_publish
from ceremony.crl.job import run_crl_job
from ceremony.crl.metrics import CrlMetrics
from ceremony.crl.state import last_reserved, state_path

#: What an unsynchronised Linux kernel returns: TIME_ERROR, STA_UNSYNC, maxerror clamped at 16 s.
UNSYNC = status_from_timex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000)
#: A kernel chrony keeps: TIME_OK, STA_PLL | STA_NANO, 12 ms maximum error.
SYNCED = status_from_timex(TIME_OK, 0x2001, 12_000, 800)


# --- the kernel call ------------------------------------------------------------------------------

class _NtpTimeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long), ("maxerror", ctypes.c_long),
                ("esterror", ctypes.c_long), ("tai", ctypes.c_long), ("reserved", ctypes.c_long * 4)]


def test_the_kernel_answer_agrees_with_ntp_gettimex() -> None:
    """adjtimex as the jobs call it, and glibc's ntp_gettimex (another system call path): same state and bound."""
    status = read_kernel_clock()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    tv = _NtpTimeval()
    state = libc.ntp_gettimex(ctypes.byref(tv))
    assert state == status.state
    assert abs(tv.maxerror / 1e6 - status.max_error_seconds) < 0.05
    assert status.synchronised == (state != TIME_ERROR)
    assert "maximum error" in status.describe()


# --- the verdict from raw kernel values -----------------------------------------------------------

def test_an_unsynchronised_kernel_is_refused_with_what_it_said() -> None:
    assert not UNSYNC.synchronised
    problem = ClockPolicy().problem(UNSYNC)
    assert problem == ("the clock of this host is not synchronised (kernel state TIME_ERROR, STA_UNSYNC set, "
                       "maximum error 16.000 s, estimated error 16.000 s)")
    clockerr = status_from_timex(TIME_OK, STA_CLOCKERR, 1000, 1000)
    assert not clockerr.synchronised and "STA_CLOCKERR set" in (ClockPolicy().problem(clockerr) or "")


def test_a_synchronised_kernel_passes_until_its_maximum_error_is_over_the_bound() -> None:
    assert SYNCED.synchronised and ClockPolicy().problem(SYNCED) is None
    drifting = status_from_timex(TIME_OK, 0x2001, 1_500_000, 900_000)  # daemon silent for ~50 min
    assert drifting.synchronised
    assert "may be off by up to 1.500 s, more than the 1 s allowed" in (ClockPolicy().problem(drifting) or "")
    assert ClockPolicy(max_error_seconds=2.0).problem(drifting) is None


def test_a_policy_that_does_not_require_sync_refuses_nothing_and_reads_nothing() -> None:
    assert ClockPolicy(require_sync=False).problem(UNSYNC) is None
    assert check_clock(None, "nothing was signed") is None
    assert check_clock(ClockPolicy(require_sync=False), "nothing was signed", UNSYNC) is UNSYNC
    with pytest.raises(ClockError) as refused:
        check_clock(ClockPolicy(origin="/etc/ceremony/clock.json"), "nothing was signed", UNSYNC)
    message = str(refused.value)
    assert "\n" not in message and "; nothing was signed (a CRL's dates come from this clock" in message
    assert "required by /etc/ceremony/clock.json" in message and refused.value.reason == "clock"
    assert isinstance(refused.value, VerificationError)


def test_the_host_file_written_by_host_baseline_and_the_flags_over_it(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    assert host_policy(path) is None and resolve_policy(None, None, path) is None  # report only
    path.write_text(json.dumps({"require_sync": True, "max_error_seconds": 0.5}))
    assert host_policy(path) == ClockPolicy(True, 0.5, str(path))
    assert resolve_policy(False, None, path) == ClockPolicy(False, 0.5, "the command line")
    assert resolve_policy(None, 2.0, path) == ClockPolicy(True, 2.0, "the command line")
    assert resolve_policy(True, None, tmp_path / "absent.json") == ClockPolicy(True, 1.0, "the command line")
    for text, field in (('{"require_sync": "yes"}', "require_sync"), ("{}", "require_sync"),
                        ('{"require_sync": true, "max_error_seconds": 0}', "max_error_seconds"),
                        ("not json", "")):
        path.write_text(text)
        with pytest.raises(DefinitionError) as bad:
            host_policy(path)
        assert str(path) in str(bad.value) and bad.value.path == field


def test_the_metrics_carry_the_clock_state() -> None:
    text = CrlMetrics("qualified", False, failure_reason="clock", clock_synchronised=False,
                      clock_max_error_seconds=16.0).render(now=1000.0)
    assert 'x509_crl_last_run_failure{ca="qualified",reason="clock"} 1' in text
    assert 'x509_crl_clock_synchronised{ca="qualified"} 0' in text
    assert 'x509_crl_clock_max_error_seconds{ca="qualified"} 16.0' in text
    assert "clock_synchronised" not in CrlMetrics("qualified", True).render(now=1000.0)


# --- the jobs refuse ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("clock-pki"))


def _cli(pki: Pki, registry: Path, out: Path, metrics: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).parent / "ceremony-crl-sign"), "--definition", str(pki.definition),
           "--ca", "qualified", "--registry", str(registry), "--out", str(out), "--metrics-dir", str(metrics), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _refusing_flags() -> list[str]:
    """Flags under which this machine's real clock is refused (see the module docstring)."""
    real = read_kernel_clock()
    if not real.synchronised:
        return ["--require-clock-sync"]
    if real.max_error_seconds <= 0:
        pytest.skip("the kernel claims a maximum error of 0: no bound below it to refuse with")
    return ["--require-clock-sync", "--max-clock-error", f"{real.max_error_seconds / 2:.9f}"]


@pytest.mark.hsm
def test_the_crl_job_refuses_an_unsynchronised_clock_before_the_token(pki: Pki, tmp_path: Path) -> None:
    registry = pki.copy_registry(tmp_path / "reg")
    out = tmp_path / "pub"
    first = run_crl_job(pki.definition, "qualified", registry, out, clock=ClockPolicy(), clock_status=SYNCED)
    assert first.signed and first.clock == SYNCED
    published = (out / "qualified.crl").read_bytes()
    reserved = last_reserved(state_path(out, "qualified"))
    with pytest.raises(ClockError, match=r"not synchronised .*; nothing was signed"):
        run_crl_job(pki.definition, "qualified", registry, out, clock=ClockPolicy(), clock_status=UNSYNC,
                    force=True)
    assert (out / "qualified.crl").read_bytes() == published
    assert last_reserved(state_path(out, "qualified")) == reserved  # no CRL number taken
    # Not required: the same clock signs (the offline root and rehearsals have no NTP by design).
    forced = run_crl_job(pki.definition, "qualified", registry, out, clock=ClockPolicy(require_sync=False),
                         clock_status=UNSYNC, force=True)
    assert forced.signed and forced.number == first.number + 1


@pytest.mark.hsm
def test_the_crl_command_refuses_on_this_machines_real_clock_with_one_line_and_metrics(pki: Pki,
                                                                                      tmp_path: Path) -> None:
    registry = pki.copy_registry(tmp_path / "reg")
    out, metrics = tmp_path / "pub", tmp_path / "metrics"
    ok = _cli(pki, registry, out, metrics, "--no-require-clock-sync")
    assert ok.returncode == 0, ok.stderr
    real = read_kernel_clock()
    text = (metrics / "ceremony_crl_qualified.prom").read_text()
    assert f'x509_crl_clock_synchronised{{ca="qualified"}} {int(real.synchronised)}' in text
    published = (out / "qualified.crl").read_bytes()

    refused = _cli(pki, registry, out, metrics, "--force", *_refusing_flags())
    assert refused.returncode == ClockError.exit_code
    assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("error: the clock of this host ") and "nothing was signed" in refused.stderr
    assert (out / "qualified.crl").read_bytes() == published
    text = (metrics / "ceremony_crl_qualified.prom").read_text()
    assert 'x509_crl_last_run_success{ca="qualified"} 0' in text
    assert 'x509_crl_last_run_failure{ca="qualified",reason="clock"} 1' in text
    assert 'x509_crl_number{ca="qualified"} 1' in text  # the published CRL is still described
    assert "x509_crl_last_success_timestamp_seconds" in text  # kept from the successful run

    # The host's file (as host_baseline writes it) gives the same refusal with no flag at all.
    config = tmp_path / "clock.json"
    flags = _refusing_flags()
    limit = float(flags[-1]) if "--max-clock-error" in flags else 1.0
    config.write_text(json.dumps({"require_sync": True, "max_error_seconds": limit}))
    by_file = _cli(pki, registry, out, metrics, "--force", "--clock-config", str(config))
    assert by_file.returncode == ClockError.exit_code and f"required by {config}" in by_file.stderr
    config.write_text(json.dumps({"require_sync": False}))
    allowed = _cli(pki, registry, out, metrics, "--force", "--clock-config", str(config))
    assert allowed.returncode == 0 and "CRL 2 of 'qualified' signed and published" in allowed.stdout


def test_the_publisher_refuses_and_the_served_crl_stays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = Ca(tmp_path)
    served = tmp_path / "www" / "crl" / "qualified.crl"
    served.parent.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    first = tmp_path / "first.crl"
    first.write_bytes(ca.crl(1, this_update=now - dt.timedelta(minutes=5)))
    args = ["--ca-cert", str(ca.cert_path), "--served", str(served), "--etag-map", str(tmp_path / "map")]
    assert crl_publish.main(["--crl", str(first), *args, "--no-require-clock-sync"]) == 0
    capsys.readouterr()
    before = (served.read_bytes(), served.stat().st_mtime, (tmp_path / "map").read_bytes())
    newer = tmp_path / "newer.crl"
    newer.write_bytes(ca.crl(2, this_update=now - dt.timedelta(minutes=1)))

    with pytest.raises(ClockError, match=rf"not synchronised .*; nothing was published from {newer}"):
        crl_publish.publish(newer.read_bytes(), str(newer), ca.cert_path, served, clock=ClockPolicy(),
                            clock_status=UNSYNC)
    assert crl_publish.main(["--crl", str(newer), *args, *_refusing_flags()]) == ClockError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: the clock of this host ") and err.count("\n") == 1
    # With partitions (--crl-url): one refusal for the whole pull, before any file of it is read.
    (tmp_path / "qualified-p0.crl").write_bytes(b"never read")
    incoming = tmp_path / "qualified.crl"
    incoming.write_bytes(newer.read_bytes())
    assert crl_publish.main(["--crl", str(incoming), "--crl-url", "http://pki.test.scse.ml/crl/qualified.crl", *args,
                             *_refusing_flags()]) == ClockError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: the clock of this host ") and err.count("\n") == 1
    assert f"nothing was published from {tmp_path}" in err
    assert sorted(p.name for p in served.parent.iterdir()) == ["qualified.crl"]
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "qualified-2.crl").write_bytes(newer.read_bytes())
    with pytest.raises(ClockError, match=f"no root CRL was put in force from {batch}"):
        crl_publish.publish_in_force(batch, ca.cert_path, served, clock=ClockPolicy(), clock_status=UNSYNC)
    assert (served.read_bytes(), served.stat().st_mtime, (tmp_path / "map").read_bytes()) == before
    assert crl_publish.publish_in_force(batch, ca.cert_path, served, clock=ClockPolicy(),
                                        clock_status=SYNCED).number == 2


def test_reading_the_clock_changes_nothing() -> None:
    """modes = 0: two reads a moment apart, and the kernel's frequency and status are the same."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    a, b = clock._Timex(), clock._Timex()
    assert libc.adjtimex(ctypes.byref(a)) >= 0 and libc.adjtimex(ctypes.byref(b)) >= 0
    assert (a.freq, a.status, a.tick, a.constant) == (b.freq, b.status, b.tick, b.constant)
    assert ctypes.sizeof(clock._Timex) == 208 or os.uname().machine not in ("x86_64", "aarch64")


# --- the alert --------------------------------------------------------------------------------------

@needs_promtool
def test_the_clock_alert_fires_on_the_jobs_metric_and_on_node_exporter(tmp_path: Path) -> None:
    """ClockNotSynchronised: from the job's x509_crl_clock_* samples or node-exporter's timex collector."""
    rules_file = tmp_path / "ceremony-pki.rules.yml"
    rules_file.write_text(render_rules())
    job = {"ca": "qualified", "instance": "subca:9100", "job": "node"}
    node = {"instance": "publisher:9100", "job": "node"}
    healthy = [series("x509_crl_clock_synchronised", "1x40", **job),
               series("x509_crl_clock_max_error_seconds", "0.012x40", **job),
               series("node_timex_sync_status", "1x40", **node),
               series("node_timex_maxerror_seconds", "0.02x40", **node)]
    unsynced_job = [series("x509_crl_clock_synchronised", "0x40", **job),
                    series("x509_crl_clock_max_error_seconds", "16x40", **job),
                    series("node_timex_sync_status", "0x40", instance="subca:9100", job="node")]
    drifting_node = [series("node_timex_sync_status", "1x40", **node),
                     series("node_timex_maxerror_seconds", "1.5x40", **node)]
    expected = annotations_of(rules_file, "ClockNotSynchronised")
    tests = [
        {"interval": "1m", "input_series": healthy, "alert_rule_test": [
            {"eval_time": "30m", "alertname": "ClockNotSynchronised", "exp_alerts": []}]},
        {"interval": "1m", "input_series": unsynced_job, "alert_rule_test": [
            {"eval_time": "5m", "alertname": "ClockNotSynchronised", "exp_alerts": []},  # for: 10m
            # One alert for the host, with the job's labels (node-exporter's sample of it is not repeated).
            {"eval_time": "15m", "alertname": "ClockNotSynchronised", "exp_alerts": [{
                "exp_labels": {**job, "severity": "critical"},
                "exp_annotations": {"summary": expected["summary"].replace("{{ $labels.instance }}", "subca:9100"),
                                    "description": expected["description"]}}]}]},
        {"interval": "1m", "input_series": drifting_node, "alert_rule_test": [
            {"eval_time": "15m", "alertname": "ClockNotSynchronised", "exp_alerts": [
                alert("ClockNotSynchronised", node, "critical")]}]},
    ]
    result = run_tests(tmp_path, rules_file, labels_only_as_promql(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
