"""Mistakes an operator makes on the production path, each walked at the terminal on its own checkout.

Each one must end with one clear message, and leave the output directory and every token as they were
(``unchanged``: files under out/, the manifest, ``pkcs11-tool --list-objects`` on each token). Where the
ceremony had already started its transcript (an interruption after the key exists), only the transcript
of the interrupted ceremony may be left, and the next run must be told about it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import (
    ADMIN,
    AUDITOR,
    CEREMONY_CAST,
    OFFICER_1,
    OFFICER_2,
    Operator,
    Person,
    Prompt,
    Terminal,
    Workspace,
    on_screen,
    shown,
    unchanged,
)

ROOT = "invoke ceremony.root --env production"  # README.md

# One workspace per module, steps in order: keep the module on one worker under xdist (--dist loadgroup).
pytestmark = [pytest.mark.walk, pytest.mark.xdist_group("walk-mistakes")]



@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def one_error(term: Terminal, *needles: str) -> str:
    """The one ``error:`` message of the run (with its indented continuation lines); no traceback."""
    assert "Traceback" not in term.screen, "a traceback instead of a message\n" + term.describe()
    lines = term.screen.splitlines()
    # at the start of a line, or right after the ^C echoed on a prompt's line
    starts = [i for i, line in enumerate(lines) if re.search(r"(?:^|\^C)error:", line)]
    assert len(starts) == 1, f"expected one error message, got {len(starts)}\n" + term.describe()
    block = [lines[starts[0]][lines[starts[0]].index("error:"):]]
    for line in lines[starts[0] + 1:]:
        if not line.startswith((" ", "\t")):
            break
        block.append(line)
    message = "\n".join(block)
    for needle in needles:
        assert re.search(needle, message), f"the message does not say {needle!r}:\n{message}"
    return message


def secrets_not_shown(ws: Workspace, term: Terminal, *extra: str) -> None:
    for value in (*ws.pins.values(), *extra):
        assert value not in term.screen, "a PIN appears on the terminal"


def current_step(term: Terminal) -> str:
    """The id of the step on screen (the last "▶ … (step-id; …)" line)."""
    steps = re.findall(r"^▶ .*\((?P<id>[a-z0-9-]+) ?;", term.screen, re.M)
    return steps[-1] if steps else ""


def test_forgotten_env(workspace: Workspace) -> None:
    """`invoke ceremony.root` without --env: never production by default."""
    ws = workspace
    with unchanged(ws):
        term = ws.run("invoke ceremony.root", check=False)
    assert term.exit_status != 0 and not term.prompts, term.describe()
    one_error(term, "--env")


def test_rehearsal_flag_on_production(workspace: Workspace) -> None:
    """`--rehearsal` with the production definition would use the production tokens: refused."""
    ws = workspace
    with unchanged(ws):
        term = ws.run(ROOT + " --rehearsal", check=False)
    assert term.exit_status != 0 and not term.prompts, term.describe()
    one_error(term, "rehearsal", "production")


def test_wrong_pin(workspace: Workspace) -> None:
    """The PIN variable holds a wrong PIN: found before anyone signs in or a bag is opened."""
    ws = workspace
    var = ws.pin_env["root"]
    wrong = "000000000000"
    with unchanged(ws):
        term = ws.run(ROOT, env=ws.env(**{var: wrong}), check=False)
    assert term.exit_status != 0, term.describe()
    assert not term.prompts, "asked for the sign-in before finding the wrong PIN\n" + term.describe()
    one_error(term, "PIN", var)
    secrets_not_shown(ws, term, wrong)


def test_role_conflict_at_sign_in(workspace: Workspace) -> None:
    """One person signs in as Ceremony Administrator and Internal Witness: refused, nothing written."""
    ws = workspace
    both = Person(ADMIN.name, ("administrator", "internal-witness"), ADMIN.id_document, OFFICER_1.name)
    people = [both, OFFICER_1, OFFICER_2, AUDITOR]
    refused: dict[str, Any] = {}

    def after_refusal(prompt: Prompt, term: Terminal) -> bool:
        # Refused, and the sign-in asked again for a correction: the operator stops there, with Ctrl-C.
        if "screen" not in refused and shown(term.screen, "refused"):
            refused["screen"] = term.screen
            refused["files"] = ws.files()
            return True
        return False

    with unchanged(ws):
        term = ws.run(ROOT, Operator(people=people, interrupt=after_refusal), check=False)
    assert term.exit_status != 0, term.describe()
    if refused:  # asked again: what was on screen when the correction was asked
        assert refused["files"] == {}, f"files written before the sign-in was accepted: {refused['files']}"
        message = refused["screen"].split(people[-1].name)[-1]
    else:  # the command stopped: its one message
        message = one_error(term)
    assert re.search(rf"{re.escape(ADMIN.name)}.*(both|à la fois)", message), \
        "the refusal does not name the person and the rule\n" + term.describe()
    assert not on_screen(term.screen, "transcript", "path"), "a transcript was opened\n" + term.describe()


def test_interrupt_during_sign_in(workspace: Workspace) -> None:
    """Ctrl-C while the third person signs in: nothing was written, nothing to clean up."""
    ws = workspace

    def third_person(prompt: Prompt, term: Terminal) -> bool:
        return prompt.kind == "id_document" and prompt.fields.get("name") == OFFICER_1.name

    with unchanged(ws):
        term = ws.run(ROOT, Operator(interrupt=third_person), check=False)
    assert term.exit_status == 130, term.describe()
    one_error(term, "interrupt")
    assert not on_screen(term.screen, "transcript", "path"), "a transcript was opened\n" + term.describe()


def test_interrupt_after_the_key_is_generated(workspace: Workspace, state: dict[str, Any]) -> None:
    """Ctrl-C when the witness is asked to confirm the signature of the root certificate: the key is
    destroyed, no certificate is written; only the interrupted ceremony's transcript is left."""
    ws = workspace

    def at_signature(prompt: Prompt, term: Terminal) -> bool:
        return prompt.kind == "witness" and current_step(term) == "certificate-sign" and not state.get("pressed")

    def pressed(prompt: Prompt, term: Terminal) -> bool:
        hit = at_signature(prompt, term)
        if hit:
            state["pressed"] = True
            state["objects-at-interrupt"] = ws.token_objects("root")
        return hit

    def transcript_files(path: str) -> bool:
        return path.startswith("production/transcripts/") or path == "production/manifest.json"

    with unchanged(ws, allow=transcript_files) as before:
        term = ws.run(ROOT, Operator(interrupt=pressed), check=False)
    assert state.get("pressed"), "the walk never reached the signature\n" + term.describe()
    assert any("Private Key" in o for o in state["objects-at-interrupt"]), "no key existed when Ctrl-C was pressed"
    assert term.exit_status == 130, term.describe()
    one_error(term, "interrupt")
    transcripts = on_screen(term.screen, "transcript", "path")
    assert len(transcripts) == 1, term.describe()
    path = transcripts[0]["path"]
    records = [json.loads(line) for line in (ws.root / path).read_text(encoding="utf-8").splitlines()]
    assert records[-1]["type"] == "close" and records[-1]["status"] == "interrupted", records[-1]
    # The manifest lists nothing but the interrupted ceremony's transcript (and its reports).
    after = ws.manifest().get("artifacts", [])
    new = [a for a in after if a not in before.manifest.get("artifacts", [])]
    assert all(a["path"].startswith("transcripts/") for a in new), new
    assert not (ws.out / "root.crt.pem").exists()
    # The auditor's check says what it is: complete but not sealed (exit 3), not a traceback. There is no
    # root to anchor in (the ceremony never made one): a failing verdict needs no anchor to be given.
    audit = ws.run(f"invoke audit.verify {path} --artifacts out/production", check=False)
    assert audit.exit_status == 3 and "Traceback" not in audit.screen, audit.describe()
    state["interrupted"] = path


def test_next_run_is_told_about_the_interruption(workspace: Workspace, state: dict[str, Any]) -> None:
    """The next root ceremony is told about the interrupted one, records it, and completes."""
    if "interrupted" not in state:
        pytest.skip("the interruption after key generation did not complete")
    ws = workspace
    interrupted = state["interrupted"]
    typo: list[str] = []

    def types_a_role_wrong(prompt: Prompt, term: Terminal) -> str | None:
        # One more mistake on the way: a Crypto Officer's role typed with a space; the role is asked again.
        if prompt.kind == "roles" and prompt.fields.get("name", "").startswith(OFFICER_1.name) and not typo:
            typo.append(prompt.line)
            return "crypto officer"
        return None

    term = ws.run(ROOT, Operator(people=list(CEREMONY_CAST), acknowledge_interrupted=True,
                                 on_prompt=types_a_role_wrong), check=False)
    # The ceremony can be run again: the label is free, the key is made.
    assert term.exit_status == 0, term.describe()
    assert (ws.out / "root.crt.pem").is_file()
    roles_asked = [p for p in term.asked("roles") if p.fields.get("name", "").startswith(OFFICER_1.name)]
    assert typo and len(roles_asked) == 2 and "crypto officer" in term.screen, "the mistyped role was not asked again"
    name = interrupted.rsplit("/", 1)[-1]
    told = name in term.screen
    new = on_screen(term.screen, "transcript", "path")[-1]["path"]
    header = json.loads((ws.root / new).read_text(encoding="utf-8").splitlines()[0])
    recorded = any(r.get("file") == name for r in header.get("resumes", []))
    assert told and recorded, (f"the next run was {'' if told else 'not '}told about {name}; its transcript "
                               f"{'records' if recorded else 'does not record'} it\n" + term.describe())
