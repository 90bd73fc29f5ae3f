"""A root key ceremony killed (``kill -9``, a power cut) after the key exists, and what the operator does
next, on its own checkout: the next run names the orphan key and how to remove it, the Crypto Officer
removes it with the command as printed, and the ceremony is run again, told about the interrupted
transcript, which its own transcript records.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from .conftest import Operator, Prompt, Terminal, Workspace, on_screen, unchanged

ROOT = "invoke ceremony.root --env production"  # README.md

# One workspace per module, steps in order: keep the module on one worker under xdist (--dist loadgroup).
pytestmark = [pytest.mark.walk, pytest.mark.xdist_group("walk-crash")]



@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def need(state: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.skip(f"an earlier step of the walk did not complete: {', '.join(missing)}")


def current_step(term: Terminal) -> str:
    steps = re.findall(r"^▶ .*\((?P<id>[a-z0-9-]+) ?;", term.screen, re.M)
    return steps[-1] if steps else ""


def test_killed_after_the_key_is_generated(workspace: Workspace, state: dict[str, Any]) -> None:
    ws = workspace

    def power_cut(prompt: Prompt, term: Terminal) -> bool | str:
        return "kill" if prompt.kind == "witness" and current_step(term) == "certificate-sign" else False

    before = ws.snapshot()
    term = ws.run(ROOT, Operator(interrupt=power_cut), check=128 + 9)
    after = ws.snapshot()
    new = before.new_files(after)
    # The transcript, and the run's journal naming the key it made (no output, no manifest entry).
    journal = [f for f in new if re.fullmatch(r"production/\.run-root-key-generation-[^/]+/journal\.json", f)]
    new = [f for f in new if f not in journal]
    assert len(journal) == 1, journal
    assert len(new) == 1 and new[0].startswith("production/transcripts/") and new[0].endswith(".jsonl"), new
    lines = (ws.root / "out" / new[0]).read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["type"] != "close", "a killed ceremony cannot have closed its transcript"
    assert any("Private Key" in o for o in after.objects["root"]), "the key was not generated before the kill"
    assert not (ws.out / "root.crt.pem").exists()
    state["killed"] = "out/" + new[0]
    state["orphans"] = after.objects["root"]
    del term


def test_next_run_names_the_orphan_key(workspace: Workspace, state: dict[str, Any]) -> None:
    """Refused before anyone signs in; the message names the objects and the command that removes them."""
    need(state, "killed")
    ws = workspace
    label = ws.key_label("root")
    with unchanged(ws):
        term = ws.run(ROOT, check=False)
    assert term.exit_status != 0 and not term.prompts, term.describe()
    assert "Traceback" not in term.screen
    errors = [line for line in term.screen.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, term.describe()
    message = term.screen[term.screen.index(errors[0]):]
    assert label in message and "exist" in message, message
    assert state["killed"].rsplit("/", 1)[-1] in term.screen, "the interrupted transcript is not named"
    m = re.search(r"witnessed: (pkcs11-tool .*?); the next", message.replace("\n", " "))
    assert m, "no command to remove the orphan objects\n" + message
    state["removal"] = [c.strip() for c in re.split(r" ; ", m.group(1))]


def test_orphan_removal_command_can_be_typed_as_printed(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "removal")
    for command in state["removal"]:
        assert not re.search(r"<[^>]*>", command), f"not a command an operator can type: {command}"


def test_crypto_officer_removes_the_orphan(workspace: Workspace, state: dict[str, Any]) -> None:
    """The printed commands, with the token's label where the message leaves a placeholder; the Crypto
    Officer types the PIN at pkcs11-tool's own prompt."""
    need(state, "removal")
    ws = workspace
    pin = ws.pins[ws.pin_env["root"]]

    def type_pin(prompt: Prompt, term: Terminal) -> str | None:
        return pin if prompt.kind == "pin" else None

    for command in state["removal"]:
        command = re.sub(r"<label of token [^>]*>", shlex.quote(ws.tokens["root"]), command)
        assert "--pin" not in command, "a PIN on the command line"
        ws.run(command, Operator(on_prompt=type_pin))
    assert ws.token_objects("root") == [], "objects left on the token"
    state["removed"] = True


def test_restart_after_the_crash(workspace: Workspace, state: dict[str, Any]) -> None:
    """The ceremony runs again: told about the killed one, it records it, completes, and both transcripts
    say what they are to the auditor (intact; incomplete)."""
    need(state, "removed")
    ws = workspace
    killed = state["killed"]
    term = ws.run(ROOT, Operator(acknowledge_interrupted=True))
    assert term.asked("interrupted"), "the interrupted transcript was not reported before the sign-in"
    assert (ws.out / "root.crt.pem").is_file()
    new = on_screen(term.screen, "transcript", "path")[-1]["path"]
    header = json.loads((ws.root / new).read_text(encoding="utf-8").splitlines()[0])
    assert [r.get("file") for r in header.get("resumes", [])] == [killed.rsplit("/", 1)[-1]], header.get("resumes")
    assert not list(ws.out.glob(".run-*")), "the interrupted run's journal is recorded and gone"
    assert "interrupted-run" in (ws.root / new).read_text(encoding="utf-8")
    trust = "--trust out/production/root.crt.pem"
    ws.run(f"invoke audit.verify {new} --artifacts out/production {trust}")
    audit = ws.run(f"invoke audit.verify {killed} --artifacts out/production {trust}", check=False)
    assert audit.exit_status == 2 and "Traceback" not in audit.screen, audit.describe()


def test_witness_does_not_confirm_a_step(workspace: Workspace, state: dict[str, Any]) -> None:
    """At a root CRL batch (terminal in English for a visiting auditor), the Internal Witness does not
    confirm the first signature: the Ceremony Administrator is asked, decides to continue and says why;
    the transcript records the exception with her decision, and still verifies."""
    need(state, "removed")
    ws = workspace
    if not (ws.out / "root.crt.pem").is_file():
        pytest.skip("the restart did not complete")
    refused: list[str] = []
    reason = "the witness looked away; the CRL was re-checked on screen with the auditor"

    def administrator(prompt: Prompt, term: Terminal) -> str | None:
        if prompt.kind == "witness" and not refused and current_step(term) == "crl-sign":
            refused.append(prompt.fields["question"])
            return "n"
        if prompt.kind == "decide":
            return "y"
        if prompt.kind == "reason":
            return reason
        return None

    term = ws.run("invoke crl.root-batch --env production --lang en", Operator(on_prompt=administrator))
    assert refused and term.asked("decide"), term.describe()
    assert all(p.lang in ("en", "") for p in term.prompts), "a prompt was not in English"
    path = on_screen(term.screen, "transcript", "path")[-1]["path"]
    records = [json.loads(line) for line in (ws.root / path).read_text(encoding="utf-8").splitlines()]
    exceptions = [r for r in records if r["type"] == "exception"]
    assert len(exceptions) == 1 and exceptions[0]["kind"] == "witness", exceptions
    assert reason in exceptions[0]["decision"] and exceptions[0]["decision"].startswith("continue"), exceptions[0]
    audit = ws.run(f"invoke audit.verify {path} --artifacts out/production --trust out/production/root.crt.pem")
    assert "exception" in audit.screen.lower(), audit.describe()
