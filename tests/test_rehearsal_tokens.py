"""A token a rehearsal used never holds a production key (issue 16, item 4).

Rehearsal key pairs carry the CKA_ID prefix ``REHEARSAL:``; a production ceremony refuses, at its
pre-flight and again after the Crypto Officer's login, a token that holds one, and leaves token and
disk as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP, TestToken, tree

from ceremony.ceremonies.preflight import run_preflight
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.common.errors import HsmError
from ceremony.definition.model import load_definition
from ceremony.hsm.keys import generate_key
from ceremony.hsm.session import REHEARSAL_ID_PREFIX, key_id, open_session, pin_source_for
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

Flow = Callable[..., tuple[Path, dict[str, TestToken]]]


def _objects(defn: Path) -> list[tuple[str, str]]:
    hsm = load_definition(defn).model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        return sorted((str(o.label), o.__class__.__name__) for o in session.get_objects())


def test_a_production_ceremony_refuses_a_token_a_rehearsal_used(definition_on_tokens: Flow, tmp_path: Path,
                                                                 air_gapped: None) -> None:
    defn, _ = definition_on_tokens()
    loaded = load_definition(defn)
    ca = loaded.model.cas["root"]
    with open_session(ca.hsm, pin_source_for(ca.hsm, interactive=False)) as session:
        ident = key_id(session, rehearsal=True)
        assert ident.startswith(REHEARSAL_ID_PREFIX) and len(ident) == 16
        generate_key(session, ca.key, "rehearsal-root", key_id=ident)
    before = _objects(defn)
    out = tmp_path / "out"

    report = run_preflight(loaded, "root-key-generation", out, rehearsal=False, interactive=False)
    refused = {f.check: f for f in report.findings if not f.ok}
    # the root key ceremony also wants an empty token; the rehearsal's objects are named for what they are
    assert set(refused) == {"rehearsal objects on 'root'", "token of 'root' empty"}, [f.line() for f in report.findings]
    rehearsal = refused["rehearsal objects on 'root'"]
    assert "'rehearsal-root' (CKA_ID 52454845415253414c3a" in rehearsal.detail
    assert "initialise the token anew" in rehearsal.fix

    with pytest.raises(HsmError, match=r"holds objects of a rehearsal .*'rehearsal-root'"):
        root_ceremony(loaded, out, ConsoleRecorder(rehearsal=False), rehearsal=False, interactive=False)
    assert _objects(defn) == before
    assert not out.exists() or not [p for p in tree(out) if p.endswith((".pem", ".der"))]


@pytest.mark.xdist_group(REHEARSAL_GROUP)  # the one shared rehearsal, on one worker
def test_a_rehearsal_marks_every_key_pair_it_generates(full_rehearsal: tuple[Path, Any]) -> None:
    """CA keys and sealing keys alike, as the key evidence of every transcript records them."""
    out, _ = full_rehearsal
    generated = []
    for path in sorted((out / "transcripts").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("type") == "evidence" and record.get("name") == "key" and record.get("step") in (
                    "key-generate", "sealing-key"):
                generated.append((path.name, record["data"]["label"], record["data"]["id_hex"]))
    assert len(generated) >= 4, generated  # root and its sealing key, the subordinate and its sealing key
    for name, label, ident in generated:
        assert bytes.fromhex(ident).startswith(REHEARSAL_ID_PREFIX), (name, label, ident)
