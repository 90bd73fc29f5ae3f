"""The alert rules shipped by roles/monitoring, checked and exercised with promtool (Debian's prometheus).

``promtool check rules`` on the file as the role renders it, then ``promtool test rules``: every
alert fires on the metric values the CRL job and the probe write in that situation, with the
annotations a sysadmin reads, and stays silent on healthy values. The timestamps are relative: in
promtool's tests ``time()`` starts at 0.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from conftest import REPO

from ceremony.ocsp.metrics import write_signer_metrics

ROLE = REPO / "roles" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (scripts/bootstrap.sh installs "
                                                             "Debian's prometheus package)")


def role_defaults(**overrides: Any) -> dict[str, Any]:
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return {**values, "ansible_managed": "Ansible managed", **overrides}


def render_rules(**overrides: Any) -> str:
    """The rules file as the role's template renders it (its #jinja2 header: [[ ]] delimiters)."""
    source = (ROLE / "templates" / "ceremony-pki.rules.yml.j2").read_text()
    header, _, body = source.partition("\n")
    assert header == "#jinja2: variable_start_string:'[[', variable_end_string:']]'"
    env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]", undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.from_string(body).render(role_defaults(**overrides))


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "ceremony-pki.rules.yml"
    path.write_text(render_rules())
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@needs_promtool
def test_promtool_checks_the_rules_as_the_role_renders_them(rules_file: Path) -> None:
    check = promtool("check", "rules", str(rules_file))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 14 rules found" in check.stdout
    names = [r["alert"] for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    assert names == ["CrlJobLastRunFailed", "CrlPinLatchSet", "CrlJobNotRunning", "CrlLastSuccessTooOld",
                     "CrlExpiresSoon", "CrlExpiresVerySoon", "ClockNotSynchronised", "CrlPublishedOlderThanSigned",
                     "CrlPartitionPublishedOlderThanSigned", "CrlProbeFailed", "CrlProbeNotRunning",
                     "CrlServedExpiresSoon", "OcspProbeFailed", "OcspSignerCertificateExpiring"]
    doc = (REPO / "docs" / "monitoring.md").read_text()
    assert all(f"`{name}`" in doc for name in names), "every alert is explained in docs/monitoring.md"


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


H = 3600
JOB = {"ca": "qualified", "instance": "subca:9100", "job": "node"}
PROBE = {"ca": "qualified", "instance": "subca:9100", "job": "node", "url": "http://pki.test.scse.ml/crl/qualified.crl",
         "publisher": "203.0.113.6"}


def alert(name: str, labels: dict[str, str], severity: str, **annotations: str) -> dict[str, Any]:
    out: dict[str, Any] = {"exp_labels": {**labels, "severity": severity}}
    if annotations:
        out["exp_annotations"] = annotations
    return out


def run_tests(tmp_path: Path, rules_file: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    spec = {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    return promtool("test", "rules", "tests.yml", cwd=tmp_path)


def annotations_of(rules_file: Path, name: str) -> dict[str, str]:
    for group in yaml.safe_load(rules_file.read_text())["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == name:
                return rule["annotations"]
    raise KeyError(name)


@needs_promtool
def test_job_alerts_fire_on_a_failed_run_and_stay_silent_on_a_healthy_one(tmp_path: Path, rules_file: Path) -> None:
    """A healthy job; then a run that fails on the PIN file while no CRL is due (last success kept)."""
    healthy = [series("x509_crl_last_run_success", "1x120", **JOB),
               series("x509_crl_last_run_timestamp_seconds", "0+60x120", **JOB),
               series("x509_crl_last_success_timestamp_seconds", "0+60x120", **JOB),
               series("x509_crl_pin_latch", "0x120", **JOB),
               series("x509_crl_next_update_seconds", f"{7 * 24 * H}x120", **JOB),
               series("x509_crl_number", "4x120", **JOB)]
    failing = [series("x509_crl_last_run_success", "0x480", **JOB),
               series("x509_crl_last_run_failure", "1x480", **JOB, reason="pin_source"),
               series("x509_crl_last_run_timestamp_seconds", "0+60x480", **JOB),
               series("x509_crl_last_success_timestamp_seconds", "0x480", **JOB),  # kept, not advancing
               series("x509_crl_pin_latch", "0x480", **JOB),
               series("x509_crl_next_update_seconds", f"{50 * H}x480", **JOB),
               series("x509_crl_number", "4x480", **JOB)]
    last_run_failed = annotations_of(rules_file, "CrlJobLastRunFailed")
    assert "journalctl -u ceremony-crl-sign@" in last_run_failed["description"]
    tests = [
        {"interval": "1m", "input_series": healthy, "alert_rule_test": [
            {"eval_time": "60m", "alertname": name, "exp_alerts": []}
            for name in ("CrlJobLastRunFailed", "CrlPinLatchSet", "CrlJobNotRunning", "CrlLastSuccessTooOld",
                         "CrlExpiresSoon", "CrlExpiresVerySoon")]},
        {"interval": "1m", "input_series": failing, "alert_rule_test": [
            {"eval_time": "5m", "alertname": "CrlJobLastRunFailed", "exp_alerts": [alert(
                "CrlJobLastRunFailed", JOB, "warning",
                summary="The CRL job of CA qualified failed on subca:9100",
                description="The last run of ceremony-crl-sign for CA qualified failed, reason pin_source. Its "
                            "message: journalctl -u ceremony-crl-sign@qualified (or -t "
                            "ceremony-crl-sign@qualified in syslog under cron).")]},
            {"eval_time": "5m", "alertname": "CrlLastSuccessTooOld", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "CrlPinLatchSet", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "CrlExpiresSoon", "exp_alerts": [alert("CrlExpiresSoon", JOB,
                                                                                    "warning")]},
            {"eval_time": "5m", "alertname": "CrlExpiresVerySoon", "exp_alerts": []},
            # Six hours of failures: the last success is too old.
            {"eval_time": "361m", "alertname": "CrlLastSuccessTooOld", "exp_alerts": [alert(
                "CrlLastSuccessTooOld", JOB, "critical")]},
            # nextUpdate at 50 h: critical from 26 h on.
            {"eval_time": "7h", "alertname": "CrlExpiresVerySoon", "exp_alerts": []},
        ]},
    ]
    result = run_tests(tmp_path, rules_file, labels_only_as_promql(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def labels_only_as_promql(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """promtool compares annotations exactly (none given: it expects none), so a case that checks only the
    labels of the alerts it expects becomes a PromQL test on the ``ALERTS`` series."""
    out = []
    for test in tests:
        promql = []
        alerts = []
        for case in test["alert_rule_test"]:
            if all("exp_annotations" in e for e in case["exp_alerts"]):
                alerts.append(case)
                continue
            labels = [e["exp_labels"] for e in case["exp_alerts"]]
            promql.append({"expr": f'ALERTS{{alertname="{case["alertname"]}",alertstate="firing"}}',
                           "eval_time": case["eval_time"],
                           "exp_samples": [{"labels": "ALERTS{" + ",".join(
                               f'{k}="{v}"' for k, v in {"alertname": case["alertname"], "alertstate": "firing",
                                                         **lab}.items()) + "}", "value": 1} for lab in labels]})
        out.append({**{k: v for k, v in test.items() if k != "alert_rule_test"}, "alert_rule_test": alerts,
                    "promql_expr_test": promql})
    return out


@needs_promtool
def test_pin_latch_and_a_dead_timer(tmp_path: Path, rules_file: Path) -> None:
    latched = [series("x509_crl_last_run_success", "0x120", **JOB),
               series("x509_crl_last_run_failure", "1x120", **JOB, reason="pin_latched"),
               series("x509_crl_pin_latch", "1x120", **JOB),
               series("x509_crl_last_run_timestamp_seconds", "0+60x120", **JOB),
               series("x509_crl_last_success_timestamp_seconds", "0x120", **JOB)]
    dead = [series("x509_crl_last_run_success", "1x300", **JOB),
            series("x509_crl_last_run_timestamp_seconds", "0x300", **JOB),
            series("x509_crl_last_success_timestamp_seconds", "0x300", **JOB)]
    tests = [
        {"interval": "1m", "input_series": latched, "alert_rule_test": [
            {"eval_time": "2m", "alertname": "CrlPinLatchSet", "exp_alerts": [{
                "exp_labels": {**JOB, "severity": "critical"},
                "exp_annotations": {
                    "summary": "The token refused the PIN of CA qualified's CRL job; nothing is signed until an "
                               "operator acts",
                    "description": "The token refused the job's PIN, so the job stopped trying it (a real HSM locks "
                                   "after a few wrong PINs). Correct the PIN file, then clear the latch as the job's "
                                   "user: ceremony-crl-sign --clear-pin-latch --ca qualified --out <the job's --out>, "
                                   "and run the job once: systemctl start ceremony-crl-sign@qualified.service."}}]},
        ]},
        {"interval": "1m", "input_series": dead, "alert_rule_test": [
            {"eval_time": "149m", "alertname": "CrlJobNotRunning", "exp_alerts": []},
            {"eval_time": "151m", "alertname": "CrlJobNotRunning", "exp_alerts": [{
                "exp_labels": {**JOB, "severity": "warning"},
                "exp_annotations": {
                    "summary": "The CRL job of CA qualified has not run for 2h 31m 0s",
                    "description": "The timer (systemctl list-timers 'ceremony-crl-sign@*') or the cron entry does "
                                   "not run the job, or it cannot write its metrics."}}]},
        ]},
    ]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_job_that_never_succeeded_is_too_old_at_once(tmp_path: Path, rules_file: Path) -> None:
    never = [series("x509_crl_last_run_success", "0x30", **JOB),
             series("x509_crl_last_run_failure", "1x30", **JOB, reason="token"),
             series("x509_crl_last_run_timestamp_seconds", "0+60x30", **JOB)]
    tests = [{"interval": "1m", "input_series": never, "alert_rule_test": [
        {"eval_time": "1m", "alertname": "CrlLastSuccessTooOld",
         "exp_alerts": [{"exp_labels": {**JOB, "severity": "critical"}}]}]}]
    result = run_tests(tmp_path, rules_file, labels_only_as_promql(tests))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_publication_alerts_from_the_probe(tmp_path: Path, rules_file: Path) -> None:
    """The signer is at CRL 5; one publisher serves 5, another still 4, a third fails its probe."""
    second = {**PROBE, "publisher": "203.0.113.10"}
    third = {**PROBE, "publisher": "203.0.113.14"}
    inputs = [series("x509_crl_number", "5x300", **JOB),
              series("x509_crl_probe_number", "5x300", **PROBE),
              series("x509_crl_probe_number", "4x300", **second),
              series("x509_crl_probe_success", "1x300", **PROBE),
              series("x509_crl_probe_success", "1x300", **second),
              series("x509_crl_probe_success", "0x300", **third),
              series("x509_crl_probe_failure", "1x300", **third, reason="signature"),
              series("x509_crl_probe_timestamp_seconds", "0+60x300", **PROBE),
              series("x509_crl_probe_next_update_seconds", f"{7 * 24 * H}x300", **PROBE),
              series("x509_crl_probe_next_update_seconds", f"{60 * H}x300", **second)]
    older = {k: v for k, v in second.items() if k in ("ca", "url", "publisher")}
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "60m", "alertname": "CrlPublishedOlderThanSigned", "exp_alerts": []},  # within the delay
        {"eval_time": "125m", "alertname": "CrlPublishedOlderThanSigned", "exp_alerts": [{
            "exp_labels": {**older, "severity": "warning"},
            "exp_annotations": {
                "summary": "203.0.113.10 serves CRL 4 of CA qualified, older than the one signed",
                "description": "The signer published CRL 5 but http://pki.test.scse.ml/crl/qualified.crl from "
                               "203.0.113.10 still serves 4: the publication (pull or push) is not reaching it. "
                               "Relying parties do not see the latest revocations."}}]},
        {"eval_time": "10m", "alertname": "CrlProbeFailed", "exp_alerts": []},
        {"eval_time": "16m", "alertname": "CrlProbeFailed", "exp_alerts": [{
            "exp_labels": {**third, "severity": "warning"},
            "exp_annotations": {
                "summary": "Relying parties cannot get a valid CRL of CA qualified from 203.0.113.14",
                "description": "http://pki.test.scse.ml/crl/qualified.crl from 203.0.113.14: reason signature "
                               "(HTTP status, content type, not a CRL, another issuer, signature, expired, scope: "
                               "another partition's CRL or the full one at a partition URL). Run "
                               "ceremony-crl-probe by hand for the message."}}]},
        {"eval_time": "20m", "alertname": "CrlProbeNotRunning", "exp_alerts": []},
        {"eval_time": "4h", "alertname": "CrlServedExpiresSoon", "exp_alerts": [{
            "exp_labels": {**second, "severity": "critical"},
            "exp_annotations": {
                "summary": "The CRL 203.0.113.10 serves for CA qualified expires in 2d 8h 0m 0s",
                "description": "What relying parties fetch from http://pki.test.scse.ml/crl/qualified.crl is about to "
                               "expire, whatever the signer has."}}]},
    ]}]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_ocsp_signer_alert_fires_on_the_metric_the_signer_ceremony_writes(tmp_path: Path, rules_file: Path) -> None:
    """The series is read from the file the signer ceremony writes (ceremony/ocsp/metrics.py), not written here by
    hand: an alert on a metric nobody writes could never fire (it watched ``x509_ocsp_signer_…`` until now)."""
    metrics = tmp_path / "metrics"
    first = write_signer_metrics(metrics, "qualified", 10 * 24 * H)  # the epoch seconds promtool's clock starts at
    later = write_signer_metrics(metrics, "qualified", 20 * 24 * H, key_generation=2)
    parsed = [line.split("{", 1)[0] for path in (first, later) for line in path.read_text().splitlines()
              if line and not line.startswith("#")]
    assert set(parsed) == {"ocsp_signer_certificate_not_after_seconds"}, parsed
    node = {"instance": "ca:9100", "job": "node"}
    tests = [
        {"interval": "1m", "input_series": [series("x509_crl_number", "5x10", **JOB)], "alert_rule_test": [
            {"eval_time": "5m", "alertname": "OcspSignerCertificateExpiring", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            series(parsed[0], f"{20 * 24 * H}x10", **node, ca="qualified", key_generation="2")],
         "alert_rule_test": [{"eval_time": "5m", "alertname": "OcspSignerCertificateExpiring", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [series(parsed[0], f"{10 * 24 * H}x10", **node, ca="qualified")],
         "alert_rule_test": [{"eval_time": "5m", "alertname": "OcspSignerCertificateExpiring", "exp_alerts": [{
             "exp_labels": {**node, "ca": "qualified", "severity": "warning"},
             "exp_annotations": {
                 "summary": "The OCSP signer certificate of CA qualified expires in 9d 23h 55m 0s",
                 "description": "Issue the responder a new delegated signing certificate before this one expires, "
                                "or its responses stop verifying."}}]}]},
        {"interval": "1m", "input_series": [
            series(parsed[0], f"{10 * 24 * H}x10", **node, ca="qualified", key_generation="2")],
         "alert_rule_test": [{"eval_time": "5m", "alertname": "OcspSignerCertificateExpiring", "exp_alerts": [{
             "exp_labels": {**node, "ca": "qualified", "key_generation": "2", "severity": "warning"},
             "exp_annotations": {
                 "summary": "The OCSP signer certificate of CA qualified (key generation 2) expires in 9d 23h 55m 0s",
                 "description": "Issue the responder a new delegated signing certificate before this one expires, "
                                "or its responses stop verifying."}}]}]},
    ]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_partition_crls_are_compared_with_their_own_partition_number(tmp_path: Path, rules_file: Path) -> None:
    """The signer is at CRL 5 (full), 2 (partition 0) and 3 (partition 1). A publisher serves partition 0's CRL 2:
    no alert, though 2 is below the full CRL's 5; it still serves partition 1's CRL 2: that one alerts."""
    p0 = {**PROBE, "url": "http://pki.test.scse.ml/crl/qualified-p0.crl", "partition": "0"}
    p1 = {**PROBE, "url": "http://pki.test.scse.ml/crl/qualified-p1.crl", "partition": "1"}
    inputs = [series("x509_crl_number", "5x300", **JOB),
              series("x509_crl_partition_number", "2x300", **JOB, partition="0"),
              series("x509_crl_partition_number", "3x300", **JOB, partition="1"),
              series("x509_crl_probe_number", "5x300", **PROBE),
              series("x509_crl_probe_number", "2x300", **p0),
              series("x509_crl_probe_number", "2x300", **p1)]
    older = {k: v for k, v in p1.items() if k in ("ca", "url", "publisher", "partition")}
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "125m", "alertname": "CrlPublishedOlderThanSigned", "exp_alerts": []},
        {"eval_time": "60m", "alertname": "CrlPartitionPublishedOlderThanSigned", "exp_alerts": []},
        {"eval_time": "125m", "alertname": "CrlPartitionPublishedOlderThanSigned", "exp_alerts": [{
            "exp_labels": {**older, "severity": "warning"},
            "exp_annotations": {
                "summary": f"{PROBE['publisher']} serves CRL 2 of partition 1 of CA qualified, older than the one "
                           "signed",
                "description": f"The signer published CRL 3 of partition 1 but {p1['url']} from {PROBE['publisher']} "
                               "still serves 2: the pull does not bring the partition CRLs to it, or it refuses them "
                               "(journalctl -u ceremony-crl-pull-<ca>). Relying parties whose certificates name this "
                               "partition do not see the latest revocations."}}]},
    ]}]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_ocsp_probe_alert_fires_after_the_delay_with_its_reason(tmp_path: Path, rules_file: Path) -> None:
    good = {"ca": "qualified", "url": "http://ocsp.test.scse.ml/qualified", "publisher": "203.0.113.14",
            "instance": "subca:9100", "job": "node"}
    bad = {**good, "publisher": "203.0.113.18"}
    inputs = [series("x509_ocsp_probe_success", "1x60", **good),
              series("x509_ocsp_probe_success", "0x60", **bad),
              series("x509_ocsp_probe_failure", "1x60", **bad, reason="signature")]
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "10m", "alertname": "OcspProbeFailed", "exp_alerts": []},
        {"eval_time": "16m", "alertname": "OcspProbeFailed", "exp_alerts": [{
            "exp_labels": {**bad, "severity": "warning"},
            "exp_annotations": {
                "summary": "Relying parties cannot get a valid OCSP response of CA qualified from 203.0.113.18",
                "description": "http://ocsp.test.scse.ml/qualified from 203.0.113.18: reason signature (connect, "
                               "HTTP status, not an OCSP response, response status, mismatch, signature, expired, "
                               "content type). Run ceremony-crl-probe by hand for the message; docs/ocsp.md, "
                               "\"On the hosts\"."}}]},
    ]}]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_come_from_the_role_variables() -> None:
    text = render_rules(monitoring_alert_crl_expiry_warning_hours=96, monitoring_alert_last_success_hours=12)
    assert "x509_crl_next_update_seconds - time() < 96 * 3600" in text
    assert "x509_crl_last_success_timestamp_seconds > 12 * 3600" in text


@needs_promtool
def test_an_earlier_keys_crl_is_not_compared_with_the_current_keys_number(tmp_path: Path, rules_file: Path) -> None:
    """After a re-key the job's headline x509_crl_number is the current key's (its own sequence, here 9); the first
    key's CRL (label key="earlier", at 4, near expiry: it is no longer re-signed) raises neither the "older than
    signed" alert nor the served-expiry one; the current key's CRL served at 8 does."""
    earlier = {**PROBE, "key": "earlier"}
    current = {**PROBE, "url": "http://pki.test.scse.ml/crl/qualified.g2.crl"}
    inputs = [series("x509_crl_number", "9x300", **JOB),
              series("x509_crl_probe_number", "4x300", **earlier),
              series("x509_crl_probe_number", "8x300", **current),
              series("x509_crl_probe_next_update_seconds", f"{H}x300", **earlier),
              series("x509_crl_probe_next_update_seconds", f"{7 * 24 * H}x300", **current)]
    older = {k: v for k, v in current.items() if k in ("ca", "url", "publisher")}
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "125m", "alertname": "CrlPublishedOlderThanSigned", "exp_alerts": [{
            "exp_labels": {**older, "severity": "warning"},
            "exp_annotations": annotations_of_rendered(rules_file, "CrlPublishedOlderThanSigned", older, 9, 8)}]},
        {"eval_time": "4h", "alertname": "CrlServedExpiresSoon", "exp_alerts": []},
    ]}]
    result = run_tests(tmp_path, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def annotations_of_rendered(rules_file: Path, name: str, labels: dict[str, str], signed: int,
                            served: int) -> dict[str, str]:
    """The annotations of CrlPublishedOlderThanSigned as promtool renders them for ``labels``."""
    assert name == "CrlPublishedOlderThanSigned"
    return {"summary": f"{labels['publisher']} serves CRL {served} of CA {labels['ca']}, older than the one signed",
            "description": f"The signer published CRL {signed} but {labels['url']} from {labels['publisher']} still "
                           f"serves {served}: the publication (pull or push) is not reaching it. Relying parties do "
                           "not see the latest revocations."}


@needs_promtool
def test_a_terminated_cas_stopped_job_and_final_crl_raise_no_alert(tmp_path: Path, rules_file: Path) -> None:
    """After a termination (role crl_signer, subordinate_ca_terminated) the job's timer is stopped for good: its last
    metrics age and their nextUpdate passes, the OCSP signer is not renewed, while the publishers serve the final CRL
    (nextUpdate 99991231235959Z, 253402300799 s). ``ceremony_ca_terminated`` silences the job's alerts for that CA;
    the same metrics without it fire (the control case)."""
    final_next_update = 253402300799  # 9999-12-31T23:59:59Z
    stopped = [series("x509_crl_last_run_success", "0x480", **JOB),
               series("x509_crl_last_run_failure", "1x480", **JOB, reason="final"),
               series("x509_crl_last_run_timestamp_seconds", "0x480", **JOB),
               series("x509_crl_last_success_timestamp_seconds", "0x480", **JOB),
               series("x509_crl_pin_latch", "0x480", **JOB),
               series("x509_crl_next_update_seconds", f"{2 * H}x480", **JOB),
               series("x509_crl_number", "4x480", **JOB),
               series("ocsp_signer_certificate_not_after_seconds", f"{H}x480", **JOB),
               series("x509_crl_probe_success", "1x480", **PROBE),
               series("x509_crl_probe_timestamp_seconds", "0+60x480", **PROBE),
               series("x509_crl_probe_number", "5x480", **PROBE, partition="", key=""),
               series("x509_crl_probe_next_update_seconds", f"{final_next_update}x480", **PROBE, key="")]
    terminated = [*stopped, series("ceremony_ca_terminated", "1x480", **JOB)]
    job_alerts = ("CrlJobLastRunFailed", "CrlPinLatchSet", "CrlJobNotRunning", "CrlLastSuccessTooOld",
                  "CrlExpiresSoon", "CrlExpiresVerySoon", "OcspSignerCertificateExpiring")
    probe_alerts = ("CrlProbeFailed", "CrlProbeNotRunning", "CrlServedExpiresSoon", "CrlPublishedOlderThanSigned")
    tests = [
        {"interval": "1m", "input_series": terminated, "alert_rule_test": [
            {"eval_time": eval_time, "alertname": name, "exp_alerts": []}
            for eval_time in ("5m", "7h") for name in job_alerts + probe_alerts]},
        {"interval": "1m", "input_series": stopped, "alert_rule_test": [
            {"eval_time": "7h", "alertname": "CrlJobNotRunning", "exp_alerts": [alert("CrlJobNotRunning", JOB,
                                                                                      "warning")]},
            {"eval_time": "7h", "alertname": "CrlExpiresVerySoon", "exp_alerts": [alert("CrlExpiresVerySoon", JOB,
                                                                                        "critical")]},
            {"eval_time": "7h", "alertname": "CrlServedExpiresSoon", "exp_alerts": []}]},
    ]
    result = run_tests(tmp_path, rules_file, labels_only_as_promql(tests))
    assert result.returncode == 0, result.stdout + result.stderr
