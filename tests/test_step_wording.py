"""What a step is called comes from its ceremony script only, never from the code.

The transcript embeds the script and hashes it; if the code named steps too, the two would drift (27
of 54 step descriptions once did). Two checks: no ceremony module words a step itself (every step is
entered through ``scripted_step``), and a real ceremony's transcript records, for every step, the
title its script gives.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.common.display import make_console
from ceremony.definition.model import load_definition
from ceremony.transcript.chain import open_transcript
from ceremony.transcript.scriptbook import load_script

#: Every module of ceremony/ceremonies/ but the end-entity issuance, which has no ceremony script (a
#: registration-authority operation at the subordinate CA, recorded on the console, not in a transcript).
CEREMONY_MODULES = sorted(p.name for p in (REPO / "ceremony" / "ceremonies").glob("*.py") if p.name != "issuance.py")


@pytest.mark.parametrize("module", CEREMONY_MODULES)
def test_no_ceremony_module_words_a_step(module: str) -> None:
    tree = ast.parse((REPO / "ceremony" / "ceremonies" / module).read_text(encoding="utf-8"))
    worded = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "recorder"]
    assert worded == [], f"ceremony/ceremonies/{module}: recorder.step(...) with the code's own words at lines {worded}"


@pytest.mark.hsm
def test_the_transcript_records_the_scripts_titles(tmp_path: Path, definition_on_tokens: Any) -> None:
    path, _ = definition_on_tokens()
    defn = load_definition(path)
    out = tmp_path / "out"
    with open_transcript(out / "transcripts", "root-key-generation", defn, rehearsal=True,
                         console=make_console(file=open("/dev/null", "w"))) as rec:
        root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    titles = {s.id: s.title["en"] for act in load_script("root-key-generation").acts for s in act.steps}
    started = [json.loads(line) for line in rec.path.read_text().splitlines()]
    recorded = {r["step"]: r["description"] for r in started if r.get("type") == "step-start"}
    assert recorded and recorded == {step: titles[step] for step in recorded}
    assert set(recorded) == set(titles)
