"""The ``ca_ceremony`` module's subordinate key ceremony, run by real ``ansible`` on this machine.

The subordinate_ca role makes the CA's key through this module so that a key made by a playbook
has the same sealed transcript as one made with ``invoke ceremony.subordinate-key`` at a terminal.
Shown here on fresh SoftHSM tokens: check mode changes nothing, the ceremony runs once and records
itself, a second run changes nothing, production without a sign-in sheet refuses before the key
exists, a key made outside a ceremony is left alone with a warning that names it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from test_ansible_crl_modules import ansible

from ceremony.definition.model import load_definition
from ceremony.hsm import keys
from ceremony.hsm import session as hsm
from ceremony.hsm.pins import PinSource

pytestmark = pytest.mark.hsm
CA = "qualified"

SIGN_IN = {
    "participants": [
        {"name": "Awa Traoré", "roles": ["administrator"], "id_document": "passport AA123456",
         "id_checked_by": "Binta Keïta"},
        {"name": "Binta Keïta", "roles": ["internal-witness"], "id_document": "NINA 1234567890",
         "id_checked_by": "Awa Traoré"},
        {"name": "Cheick Diallo", "roles": ["crypto-officer"], "id_document": "NINA 2345678901",
         "id_checked_by": "Awa Traoré"},
        {"name": "Drissa Coulibaly", "roles": ["crypto-officer"], "id_document": "passport BB234567",
         "id_checked_by": "Awa Traoré"},
    ],
    "bags": {"open": {"subordinate-hsm": "ML-TE-000201"}, "reseal": {"subordinate-hsm": "ML-TE-000202"}},
    "confirm": True,
}


def args(definition: Path, out: Path, **extra: object) -> dict[str, object]:
    return {"definition": str(definition), "action": "subordinate-key", "ca": CA, "out": str(out),
            "softhsm_conf": os.environ["SOFTHSM2_CONF"], **extra}


def key_objects(definition: Path) -> int:
    ca = load_definition(definition).model.cas[CA]
    with hsm.open_session(ca.hsm, PinSource(env=ca.hsm.pin_env, interactive=False), rw=False) as session:
        return len(hsm.objects_with_label(session, ca.hsm.key_label))


def test_the_key_ceremony_runs_once_and_records_itself(tmp_path: Path, definition_on_tokens) -> None:
    definition, _ = definition_on_tokens()
    out = tmp_path / "out"
    code, result, text = ansible("ca_ceremony", args(definition, out), "--check", "--diff")
    assert code == 0 and result["changed"] is True, text
    assert key_objects(definition) == 0 and not out.exists()

    code, result, text = ansible("ca_ceremony", args(definition, out))
    assert code == 0 and result["changed"] is True, text
    transcript = Path(str(result["transcript"]))
    assert transcript.parent == out / "transcripts" and transcript.name.startswith("subordinate-key-generation-")
    assert (out / f"{CA}.csr.pem").exists() and (out / f"{CA}.pub.pem").exists()
    assert key_objects(definition) == 2  # the private and public halves, under the definition's label
    # On the subordinate CA's host there is no root certificate and the key has no certificate yet: the
    # file verifies (chain, records, seal), and without an anchor nothing passes (exit 64, never 0).
    verify = subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify", str(transcript), "--rehearsal"],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert verify.returncode == 64 and verify.stdout.startswith("NOT VERIFIED: chain, records and seal are "
                                                                "consistent"), verify.stdout[-2000:] + verify.stderr
    public = load_pem_public_key((out / f"{CA}.pub.pem").read_bytes())
    assert result["spki_sha256"] == keys.spki_sha256(public)

    code, again, text = ansible("ca_ceremony", args(definition, out))
    assert code == 0 and again["changed"] is False, text
    assert again["spki_sha256"] == result["spki_sha256"]
    assert sorted(p.name for p in (out / "transcripts").iterdir()) == [transcript.name]


def test_production_without_a_sign_in_sheet_makes_no_key(tmp_path: Path, definition_on_tokens) -> None:
    definition, _ = definition_on_tokens()
    out = tmp_path / "out"
    code, result, text = ansible("ca_ceremony", args(definition, out, rehearsal=False))
    assert code != 0
    assert "answers" in str(result.get("msg")) and "nothing was done" in str(result.get("msg")), text
    assert key_objects(definition) == 0 and not out.exists()


def test_production_with_a_sign_in_sheet_records_its_participants(tmp_path: Path, definition_on_tokens) -> None:
    definition, _ = definition_on_tokens()
    out = tmp_path / "out"
    sheet = tmp_path / "answers.yml"
    sheet.write_text(yaml.safe_dump(SIGN_IN, allow_unicode=True))
    code, result, text = ansible("ca_ceremony", args(definition, out, rehearsal=False, answers=str(sheet)))
    assert code == 0 and result["changed"] is True, text
    recorded = Path(str(result["transcript"])).read_text()
    assert "Cheick Diallo" in recorded and "ML-TE-000202" in recorded


def test_a_key_made_outside_a_ceremony_is_left_alone_and_named(tmp_path: Path, definition_on_tokens) -> None:
    definition, _ = definition_on_tokens()
    ca = load_definition(definition).model.cas[CA]
    with hsm.open_session(ca.hsm, PinSource(env=ca.hsm.pin_env, interactive=False)) as session:
        made = keys.generate_key(session, ca.key, ca.hsm.key_label, backup=ca.backup.mode == "wrapped")
    out = tmp_path / "out"
    code, result, text = ansible("ca_ceremony", args(definition, out))
    assert code == 0 and result["changed"] is False, text
    warning = " ".join(str(w) for w in result.get("warnings", []))
    assert ca.hsm.key_label in warning and made.spki_sha256 in warning and "no transcript" in warning
    assert not (out / "transcripts").exists() and key_objects(definition) == 2


def test_a_public_key_file_of_another_key_is_refused(tmp_path: Path, definition_on_tokens) -> None:
    first, _ = definition_on_tokens(name="first.yml")
    out = tmp_path / "out"
    assert ansible("ca_ceremony", args(first, out))[0] == 0
    second, _ = definition_on_tokens(name="second.yml")  # other tokens, and the same out directory
    ca = load_definition(second).model.cas[CA]
    with hsm.open_session(ca.hsm, PinSource(env=ca.hsm.pin_env, interactive=False)) as session:
        keys.generate_key(session, ca.key, ca.hsm.key_label, backup=ca.backup.mode == "wrapped")
    before = sorted(p.name for p in out.rglob("*"))
    code, result, text = ansible("ca_ceremony", args(second, out))
    assert code != 0 and "another public key" in str(result.get("msg")), text
    assert sorted(p.name for p in out.rglob("*")) == before
