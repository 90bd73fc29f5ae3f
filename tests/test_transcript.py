"""The transcript recorder: scripted acts, deviations as numbered exceptions, separation of duties.

These tests seal with a software key (the HSM-backed sealing is in test_audit.py and the rehearsal
tests): what is under test here is the record keeping, not the HSM.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TESTING_DEFINITION
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.common.errors import HsmError
from ceremony.common.pgpwords import hex_to_words
from ceremony.definition.model import load_definition
from ceremony.transcript.audit import verify
from ceremony.transcript.chain import (
    GENESIS,
    FileAnswers,
    TranscriptError,
    canonical,
    line_hash,
    open_rehearsal_transcript,
    open_transcript,
    seal_message,
)
from ceremony.transcript.participants import Participant, ParticipantError, Rules, check_separation, rules_for
from ceremony.transcript.scriptbook import available, load_script, parse_script

ROOT_STEPS = ["offline-check", "definition-check", "token-open", "key-generate", "certificate-lint",
              "certificate-sign", "certificate-verify", "sealing-certificate", "outputs-write",
              "fingerprint-read-aloud"]
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@pytest.fixture(scope="module")
def definition() -> Any:
    return load_definition(TESTING_DEFINITION)


def spki_sha256(key: Any) -> str:
    return hashlib.sha256(key.public_key().public_bytes(serialization.Encoding.DER, SPKI)).hexdigest()


def soft_transcript(out: Path, definition: Any, steps: Iterable[str], *, seal: bool = True,
                    script: str = "root-key-generation",
                    during: Callable[[Any], None] | None = None) -> tuple[Path, Any]:
    """A rehearsal transcript of ``steps``, sealed by a software key whose public key is in ``out``."""
    key = ec.generate_private_key(ec.SECP384R1())
    out.mkdir(parents=True, exist_ok=True)
    (out / "seal.pub.pem").write_bytes(key.public_key().public_bytes(PEM, SPKI))
    path = out / "transcripts" / f"{script}-1.jsonl"
    with open_rehearsal_transcript(path, script, definition) as rec:
        rec.evidence("key", {"spki_sha256": spki_sha256(key)})
        for s in steps:
            with rec.step(s, f"step {s}"):
                pass
        if during:
            during(rec)
        if seal:
            rec.seal(key, {"kind": "public-key", "path": "seal.pub.pem", "sha256": ""})
    return path, key


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def rewrite(path: Path, recs: list[dict[str, Any]], key: Any | None = None) -> None:
    """Renumber and re-chain ``recs`` (as a forger with write access would), re-signing the seal with ``key``
    (and naming ``key`` in it, as a forger would: the seal then verifies, only the trust anchor can tell)."""
    prev = GENESIS
    lines = []
    for i, r in enumerate(recs):
        r = dict(r, seq=i, prev=prev)
        if r["type"] == "seal" and key is not None:
            der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
            r["head"], r["words"] = prev, hex_to_words(prev)
            r["verifier"] = dict(r["verifier"], public_key=base64.b64encode(der).decode(),
                                 spki_sha256=hashlib.sha256(der).hexdigest())
            r["signature"] = base64.b64encode(key.sign(seal_message(r), ec.ECDSA(hashes.SHA384()))).decode()
        if r["type"] == "close":
            r["records"] = len(recs)
        if r["type"] == "act-end" and key is not None:  # the heads shown to the room, recomputed too
            r["head"], r["words"] = prev, hex_to_words(prev)
        line = canonical(r)
        lines.append(line)
        prev = line_hash(line)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_every_shipped_script_parses_with_the_engine_step_ids() -> None:
    assert set(available()) >= {"root-key-generation", "subordinate-key-generation", "subordinate-signing",
                                "root-crl-batch", "key-backup", "key-restore"}
    assert [s.id for s in load_script("root-key-generation").steps] == ROOT_STEPS
    assert [s.id for s in load_script("subordinate-key-generation").steps] == [
        "definition-check", "token-open", "key-generate", "csr-sign", "outputs-write", "fingerprint-read-aloud"]
    assert [s.id for s in load_script("subordinate-signing").steps] == [
        "offline-check", "definition-check", "csr-verify", "token-open", "certificate-lint", "certificate-sign",
        "certificate-verify", "sealing-certificate", "outputs-write", "fingerprint-read-aloud"]
    crl = load_script("root-crl-batch")
    assert [s.id for s in crl.steps if s.repeat] == ["crl-lint", "crl-sign", "crl-verify", "ocsp-sign"]
    backup = load_script("key-backup")
    assert [s.id for s in backup.steps][:3] == ["offline-check", "definition-check", "token-open"]
    assert backup.step("wrapping-key-trust").role == "security-officer"
    assert backup.step("key-wrap").role == "crypto-officer"
    assert backup.step("shares-distribute").role == "custodian"
    assert [s.id for s in load_script("key-restore").steps] == [
        "offline-check", "definition-check", "backup-verify", "shares-collect", "token-open", "key-unwrap",
        "test-signature", "sealing-key", "outputs-write"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d["acts"][2]["steps"][0].update(role="janitor"), "not a role"),
    (lambda d: d["acts"][2]["steps"][0].pop("witness"), "true or false"),
    (lambda d: d["acts"][2]["steps"][0]["title"].pop("fr"), "English and French"),
    (lambda d: d["acts"].pop(0), "opens with sign-in"),
    (lambda d: d["acts"][2]["steps"].append(dict(d["acts"][2]["steps"][0])), "appears twice"),
])
def test_bad_script_is_refused_with_its_path(mutate: Callable[[dict], None], message: str) -> None:
    data = yaml.safe_load(load_script("root-key-generation").source)
    mutate(data)
    with pytest.raises(Exception, match=message) as info:
        parse_script(yaml.safe_dump(data, allow_unicode=True), "bad.yml")
    assert "bad.yml" in str(info.value)


def test_scripted_rehearsal_transcript_verifies(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS)
    recs = records(path)
    header = recs[0]
    assert header["type"] == "header" and header["rehearsal"] is True
    assert header["script"]["sha256"] == load_script("root-key-generation").sha256
    assert header["definition"]["sha256"] == definition.sha256
    assert header["environment"]["hostname"] and header["environment"]["sources"]["sha256"]
    people = [r["participant"] for r in recs if r["type"] == "sign-in"]
    assert people and all(p["name"].endswith("(rehearsal)") for p in people)
    bags = [r for r in recs if r["type"] == "bag"]
    assert {(b["bag"], b["when"]) for b in bags} == {("hsm", "open"), ("workstation", "open"), ("hsm", "reseal"),
                                                      ("workstation", "reseal")}
    assert all(b["serial"].startswith("REHEARSAL-") for b in bags)
    heads = [r for r in recs if r["type"] == "act-end"]
    assert [h["act"] for h in heads] == ["sign-in", "bags-open", "preparation", "key-generation", "certificate",
                                        "outputs", "bags-reseal"]
    assert all(len(h["words"]) == 32 for h in heads)
    assert not [r for r in recs if r["type"] == "exception"]
    assert [r["type"] for r in recs[-2:]] == ["close", "seal"] and recs[-2]["status"] == "sealed"
    result = verify(path)
    assert result.status == "intact", result.problems


def test_unscripted_skipped_and_out_of_order_steps_are_numbered_exceptions(tmp_path: Path, definition: Any) -> None:
    steps = ["offline-check", "coffee-break", "token-open", "definition-check", *ROOT_STEPS[3:]]
    path, _ = soft_transcript(tmp_path / "out", definition, steps)
    exceptions = [r for r in records(path) if r["type"] == "exception"]
    assert [e["number"] for e in exceptions] == [1, 2, 3]
    assert "not in the script" in exceptions[0]["what"] and exceptions[0]["step"] == "coffee-break"
    assert "before the scripted step(s) definition-check" in exceptions[1]["what"]
    assert "out of order" in exceptions[2]["what"]
    assert all(e["approved_by"].startswith("Moussa Konaté") and e["decision"] for e in exceptions)
    assert verify(path).status == "intact"


def test_steps_never_performed_are_an_exception_before_the_seal(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS[:-1])
    exceptions = [r for r in records(path) if r["type"] == "exception"]
    assert len(exceptions) == 1 and "fingerprint-read-aloud" in exceptions[0]["what"]
    assert verify(path).status == "intact"


def test_repeated_crl_steps_follow_the_script(tmp_path: Path, definition: Any) -> None:
    rounds = ["crl-lint", "crl-sign", "crl-verify", "ocsp-sign"] * 4
    steps = ["offline-check", "definition-check", "token-open", *rounds, "outputs-write", "fingerprint-read-aloud"]
    path, _ = soft_transcript(tmp_path / "out", definition, steps, script="root-crl-batch")
    assert not [r for r in records(path) if r["type"] == "exception"]
    assert verify(path).status == "intact"
    # a non-repeatable step twice is a deviation
    path2, _ = soft_transcript(tmp_path / "out2", definition, [*steps[:4], "token-open", *steps[4:]],
                               script="root-crl-batch")
    assert [r["step"] for r in records(path2) if r["type"] == "exception"] == ["token-open"]
    # a round that skips the lint is a deviation: a repeated block restarts at its first step
    path3, _ = soft_transcript(tmp_path / "out3", definition, [*steps[:6], "crl-sign", "crl-verify", *steps[6:]],
                               script="root-crl-batch")
    assert [r["step"] for r in records(path3) if r["type"] == "exception"] == ["crl-sign"]


def test_ceremony_without_seal_is_closed_unsealed_and_does_not_pass(tmp_path: Path, definition: Any) -> None:
    path, _ = soft_transcript(tmp_path / "out", definition, ROOT_STEPS, seal=False)
    assert records(path)[-1]["status"] == "unsealed"
    result = verify(path)
    assert result.status == "unsealed" and not result.ok and result.exit_code == 3


def test_failed_step_is_recorded_with_its_exception(tmp_path: Path, definition: Any) -> None:
    path = tmp_path / "out" / "transcripts" / "t.jsonl"
    with pytest.raises(HsmError), open_rehearsal_transcript(path, "root-key-generation", definition) as rec:
        with rec.step("offline-check", "offline"):
            pass
        with rec.step("definition-check", "definition"):
            raise HsmError("token not found: token label 'x'")
    recs = records(path)
    failed = [r for r in recs if r["type"] == "step-end" and r["outcome"] == "failed"]
    assert failed and "token not found" in failed[0]["error"]
    exc = [r for r in recs if r["type"] == "exception"]
    assert exc[0]["kind"] == "failure" and exc[0]["decision"].startswith("ceremony stopped")
    assert [r["type"] for r in recs[-3:]] == ["sign-out"] * 2 + ["close"] or recs[-1]["status"] == "failed"
    assert recs[-1]["status"] == "failed"
    result = verify(path)
    assert result.status == "failed" and result.exit_code == 3 and not result.problems


def test_forged_transcript_without_its_exception_is_invalid(tmp_path: Path, definition: Any) -> None:
    """A forger who rewrites the whole chain and even holds the key still cannot hide a deviation."""
    path, key = soft_transcript(tmp_path / "out", definition, ["coffee-break", *ROOT_STEPS])
    recs = [r for r in records(path) if r["type"] != "exception"]
    rewrite(path, recs, key)
    result = verify(path)
    assert result.status == "invalid"
    assert "not in the script" in str(result.problems[0]) and "no exception records it" in str(result.problems[0])


# --- sign-in and separation of duties -------------------------------------------------------------------

def person(name: str, *roles: str, checked_by: str = "Awa") -> Participant:
    return Participant(name, roles, f"passport {name}", checked_by)


ROOT_RULES = Rules(frozenset({"administrator", "internal-witness", "crypto-officer", "independent-witness"}), 2)
GOOD = [person("Awa", "administrator", checked_by="Binta"), person("Binta", "internal-witness"),
        person("Cheick", "crypto-officer"), person("Drissa", "crypto-officer"), person("Eve", "independent-witness")]


def test_good_sign_in_passes() -> None:
    check_separation(GOOD, ROOT_RULES)


@pytest.mark.parametrize("people, message", [
    ([person("Awa", "administrator", "internal-witness", checked_by="Cheick"), *GOOD[2:]],
     "both the Ceremony Administrator and the Internal Witness"),
    ([GOOD[0], person("Binta", "internal-witness", "crypto-officer"), *GOOD[2:]], "Internal Witness and a Crypto"),
    ([*GOOD[:3], GOOD[4]], "quorum is 2 distinct people"),
    (GOOD[:4], "nobody signed in as Independent witness"),
    ([*GOOD[:4], person("Eve", "independent-witness", "crypto-officer")], "holds no other role"),
    ([*GOOD, person("awa ", "crypto-officer")], "signed in twice"),
    ([*GOOD, person("Âwa", "crypto-officer")], "signed in twice"),
    ([person("Awa", "administrator", checked_by="Awa"), *GOOD[1:]], "checked by someone else"),
    ([*GOOD[:4], person("Eve", "independent-witness", checked_by="Zoé")], "who has not signed in"),
])
def test_separation_violations_are_refused(people: list[Participant], message: str) -> None:
    with pytest.raises(ParticipantError, match=message):
        check_separation(people, ROOT_RULES)


def test_rules_follow_script_definition_and_mode(definition: Any) -> None:
    root = rules_for(load_script("root-key-generation"), definition, rehearsal=False)
    assert "independent-witness" in root.required_roles and root.crypto_officer_quorum == 2
    assert "independent-witness" not in rules_for(load_script("root-key-generation"), definition, True).required_roles
    backup = rules_for(load_script("key-backup"), definition, rehearsal=False)
    assert {"security-officer", "custodian"} <= backup.required_roles and backup.custodian_quorum == 2


def answers_file(path: Path, people: list[dict[str, Any]], **extra: Any) -> Path:
    data = {"participants": people, "bags": {"open": {"hsm": "BAG-1", "workstation": "BAG-2"},
                                             "reseal": {"hsm": "BAG-3", "workstation": "BAG-4"}},
            "confirm": True, **extra}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def people_data(people: list[Participant]) -> list[dict[str, Any]]:
    return [{"name": p.name, "roles": list(p.roles), "id_document": p.id_document, "id_checked_by": p.id_checked_by}
            for p in people]


def test_violation_creates_no_transcript_and_runs_nothing(tmp_path: Path, definition: Any) -> None:
    bad = [person("Awa", "administrator", "internal-witness", checked_by="Cheick"), *GOOD[2:]]
    answers = answers_file(tmp_path / "answers.yml", people_data(bad))
    ran = []
    with pytest.raises(ParticipantError), open_transcript(tmp_path / "out" / "transcripts", "root-key-generation",
                                                          definition, rehearsal=False, answers=answers):
        ran.append(True)
    assert not ran
    assert not (tmp_path / "out").exists()


def test_production_transcript_from_answers_file(tmp_path: Path, definition: Any) -> None:
    answers = answers_file(tmp_path / "answers.yml", people_data(GOOD))
    with open_transcript(tmp_path / "out" / "transcripts", "root-key-generation", definition, rehearsal=False,
                         answers=answers) as rec:
        with rec.step("offline-check", "offline"):
            pass
        path = rec.path
    recs = records(path)
    assert recs[0]["rehearsal"] is False
    assert [r["serial"] for r in recs if r["type"] == "bag"] == ["BAG-1", "BAG-2", "BAG-3", "BAG-4"]
    assert {r["participant"]["name"] for r in recs if r["type"] == "sign-in"} == {p.name for p in GOOD}
    assert verify(path).status == "unsealed"


def test_answers_file_can_stop_on_a_deviation(tmp_path: Path, definition: Any) -> None:
    answers = answers_file(tmp_path / "answers.yml", people_data(GOOD), exceptions="stop")
    body = []
    with pytest.raises(TranscriptError, match="stopped the ceremony"), open_transcript(  # noqa: SIM117
            tmp_path / "t", "root-key-generation", definition, rehearsal=False, answers=answers) as rec:
        with rec.step("improvised", "something unscripted"):
            body.append(True)
    assert not body
    path = next((tmp_path / "t").glob("*.jsonl"))
    recs = records(path)
    assert recs[-1]["status"] == "failed"
    assert next(r["decision"] for r in recs if r["type"] == "exception").startswith("stop")


@pytest.mark.parametrize("data, message", [
    ({"participants": [], "bags": {}}, "a list of people is required"),
    ({"participants": [{"name": "A", "roles": ["boss"], "id_document": "x", "id_checked_by": "B"}]},
     "'boss' is not a role"),
    ({"participants": [{"name": "A", "roles": ["administrator"], "id_document": "x"}]}, "id_checked_by: required"),
    ({"particpants": []}, "unknown key"),
    ({"participants": [{"name": "A", "roles": ["administrator"], "id_document": "x", "id_checked_by": "B"}],
      "exceptions": "maybe"}, "stop, continue"),
])
def test_bad_answers_file_names_file_and_field(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    path = tmp_path / "answers.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises((TranscriptError, ParticipantError), match=message) as info:
        FileAnswers(path)
    assert str(path) in str(info.value)


def test_missing_bag_serial_stops_before_the_ceremony(tmp_path: Path, definition: Any) -> None:
    answers = answers_file(tmp_path / "answers.yml", people_data(GOOD))
    data = yaml.safe_load(answers.read_text(encoding="utf-8"))
    del data["bags"]["open"]["workstation"]
    answers.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    ran = []
    with pytest.raises(TranscriptError, match=r"bags\.open\.workstation"), open_transcript(
            tmp_path / "t", "root-key-generation", definition, rehearsal=False, answers=answers):
        ran.append(True)
    assert not ran
    assert not (tmp_path / "t").exists(), "refused before any transcript exists"


TERMINAL_DRIVER = """
import sys
from pathlib import Path
from rich.console import Console
from ceremony.definition.model import load_definition
from ceremony.transcript.chain import open_transcript

defn = load_definition(sys.argv[1])
lang = sys.argv[3] if len(sys.argv) > 3 else "en"
with open_transcript(Path(sys.argv[2]), "subordinate-key-generation", defn, rehearsal=False,
                     console=Console(highlight=False), lang=lang) as rec:
    with rec.step("definition-check", "Check the definition"):
        pass
"""


def at_the_terminal(tmp_path: Path, answers: list[str], lang: str = "en") -> Any:
    """Run the terminal driver with ``answers`` typed line by line; it must succeed."""
    import subprocess
    import sys

    driver = tmp_path / "driver.py"
    driver.write_text(TERMINAL_DRIVER, encoding="utf-8")
    run = subprocess.run([sys.executable, str(driver), str(TESTING_DEFINITION), str(tmp_path / "t"), lang],
                         input="\n".join(answers) + "\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_interactive_sign_in_and_confirmations_at_the_terminal(tmp_path: Path) -> None:
    """The prompts read plain lines: sign-in, chain-head copies, bag serials, witness confirmations."""

    answers = ["Awa Traoré", "administrator", "passport P1", "Binta Keïta",
               "Binta Keïta", "internal-witness", "passport P2", "Awa Traoré",
               "Cheick Diallo", "crypto-officer", "NINA P3", "Awa Traoré",
               "Drissa Coulibaly", "crypto-officer", "NINA P4", "Awa Traoré", "",
               "y", "ML-BAG-1", "y", "y", "y", "ML-BAG-2", "y"]
    run = at_the_terminal(tmp_path, answers)
    shown = " ".join(run.stdout.split())
    assert "Act 3 of 7: Preparation and checks" in shown and "Step 1 of 6: Check the definition" in shown
    path = next((tmp_path / "t").glob("subordinate-key-generation-*.jsonl"))
    recs = records(path)
    assert [r["participant"]["name"] for r in recs if r["type"] == "sign-in"] == [
        "Awa Traoré", "Binta Keïta", "Cheick Diallo", "Drissa Coulibaly"]
    assert [r["serial"] for r in recs if r["type"] == "bag"] == ["ML-BAG-1", "ML-BAG-2"]
    end = next(r for r in recs if r["type"] == "step-end")
    assert end["witness"] == {"name": "Binta Keïta", "confirmed": True}
    assert recs[0]["rehearsal"] is False and recs[-1]["status"] == "unsealed"


def test_unconfirmed_witness_steps_are_exceptions(tmp_path: Path, definition: Any) -> None:
    answers = answers_file(tmp_path / "answers.yml", people_data(GOOD), confirm=False, exceptions="continue")
    with open_transcript(tmp_path / "t", "root-key-generation", definition, rehearsal=False,
                         answers=answers) as rec:
        for step in ("offline-check", "definition-check"):
            with rec.step(step, step):
                pass
        path = rec.path
    recs = records(path)
    witness = [r for r in recs if r["type"] == "exception" and r["kind"] == "witness"]
    assert [r["step"] for r in witness] == ["offline-check", "definition-check"]
    assert all(r["decision"].startswith("continue") for r in witness)
    result = verify(path)
    assert result.status == "unsealed" and not result.problems
    # the same transcript without its witness exceptions is invalid
    rewrite(path, [r for r in recs if not (r["type"] == "exception" and r["kind"] == "witness")])
    assert "did not confirm step 'offline-check'" in str(verify(path).problems[0])


def test_ctrl_c_closes_the_transcript_as_interrupted(tmp_path: Path, definition: Any) -> None:
    path = tmp_path / "out" / "transcripts" / "t.jsonl"
    with pytest.raises(KeyboardInterrupt), open_rehearsal_transcript(path, "root-key-generation", definition) as rec, \
            rec.step("offline-check", "offline"):
        raise KeyboardInterrupt
    recs = records(path)
    assert recs[-1]["status"] == "interrupted" and recs[-1]["error"] == "interrupted by the operator"
    assert any(r["type"] == "sign-out" for r in recs), "the people still sign out"
    result = verify(path)
    assert result.status == "interrupted" and result.exit_code == 3 and not result.problems


@pytest.mark.parametrize("flags, message", [
    ({"extractable": True, "never_extractable": False, "wrap_with_trusted": False}, "extractable without"),
    ({"local": False}, "local=False"),
])
def test_key_evidence_must_show_a_key_that_stays_in_the_hsm(tmp_path: Path, definition: Any,
                                                           flags: dict[str, bool], message: str) -> None:
    good = {"local": True, "sensitive": True, "always_sensitive": True, "never_extractable": True,
            "extractable": False, "wrap_with_trusted": False, "sign": True, "decrypt": False, "unwrap": False,
            "derive": False}

    def key_step(rec: Any) -> None:
        with rec.step("key-generate", "generate"):
            rec.evidence("key", {**good, **flags, "spki_sha256": "0" * 64})

    steps = ROOT_STEPS[:3]
    path, _ = soft_transcript(tmp_path / "out", definition, steps, during=key_step)
    result = verify(path)
    assert result.status == "invalid" and message in str(result.problems[0])


def test_production_root_ceremony_online_is_invalid(tmp_path: Path, definition: Any) -> None:
    answers = answers_file(tmp_path / "answers.yml", people_data(GOOD))
    with open_transcript(tmp_path / "t", "root-key-generation", definition, rehearsal=False,
                         answers=answers) as rec, rec.step("offline-check", "offline"):
        rec.evidence("offline-check", {"offline": False, "non_loopback_up": ["eth0"]})
    assert "network interface up: eth0" in str(verify(rec.path).problems[0])


def test_a_sign_in_conflict_at_the_terminal_is_corrected_not_fatal(tmp_path: Path) -> None:
    """Awa signs in as Administrator and Internal Witness: refused with the reason, then corrected in place
    (her roles changed, a witness added), and the ceremony goes on; nothing is written before."""

    answers = ["Awa Traoré", "administrator,internal-witness", "passport P1", "Cheick Diallo",
               "Cheick Diallo", "crypto-officer", "NINA P3", "Awa Traoré",
               "Drissa Coulibaly", "crypto-officer", "NINA P4", "Awa Traoré", "",
               # refused; the roles of each person are asked again: change Awa's, keep the others'
               "administrator", "", "",
               "Binta Keïta", "internal-witness", "passport P2", "Awa Traoré", "",
               "y", "ML-BAG-1", "y", "y", "y", "ML-BAG-2", "y"]
    run = at_the_terminal(tmp_path, answers)
    flat = " ".join(run.stdout.split())
    assert "Sign-in refused:" in flat and "Ceremony Administrator and the Internal Witness" in flat
    recs = records(next((tmp_path / "t").glob("subordinate-key-generation-*.jsonl")))
    signed = {r["participant"]["name"]: r["participant"]["roles"] for r in recs if r["type"] == "sign-in"}
    assert signed == {"Awa Traoré": ["administrator"], "Cheick Diallo": ["crypto-officer"],
                      "Drissa Coulibaly": ["crypto-officer"], "Binta Keïta": ["internal-witness"]}
    assert recs[0]["answers"] == {"kind": "terminal"}


def test_the_terminal_speaks_french_and_the_record_stays_english(tmp_path: Path) -> None:
    """--lang fr: prompts, acts, steps and confirmations in French (o/n); the transcript records the same
    step ids and English descriptions as in English, so the seal never depends on the room's language."""

    answers = ["Awa Traoré", "administrator", "passeport P1", "Binta Keïta",
               "Binta Keïta", "internal-witness", "passeport P2", "Awa Traoré",
               "Cheick Diallo", "crypto-officer", "NINA P3", "Awa Traoré",
               "Drissa Coulibaly", "crypto-officer", "NINA P4", "Awa Traoré", "",
               "o", "ML-SAC-1", "o", "oui", "o", "ML-SAC-2", "o"]
    run = at_the_terminal(tmp_path, answers, "fr")
    shown = " ".join(run.stdout.split())
    for french in ("Émargement. Rôles requis", "Nom (ligne vide quand tout le monde a émargé)",
                   "Pièce d'identité de Awa Traoré", "Numéro du sac de sécurité ouvert",
                   "Acte 3 sur 7 : Préparation et vérifications", "Étape 1 sur 6 :",
                   "avez-vous été témoin de l'étape 1", "tête de chaîne recopiée sur le script papier ?",
                   "Fin de l'acte", "[o/n]"):
        assert french in shown, french
    assert "Sign-in" not in shown and "Act 3" not in shown
    recs = records(next((tmp_path / "t").glob("subordinate-key-generation-*.jsonl")))
    start = next(r for r in recs if r["type"] == "step-start")
    assert start["step"] == "definition-check" and start["description"] == "Check the definition"
    assert next(r for r in recs if r["type"] == "step-end")["witness"]["confirmed"] is True
