"""The root token as production.example has it, walked in order: split knowledge from the first day.

production.example sets ``ceremony.crypto_officer_quorum: 2``, so the operator's first ceremony is not the root key
ceremony but the root token's initialisation (README: "before each CA's key ceremony, on its token"), at which two
Crypto Officers each type a part of the user PIN, unseen; every later root ceremony asks the same two officers for
their parts, and a PIN change hands them new ones. Walked here in production mode at a pseudo-terminal, the root
token starting as SoftHSM's free slot, with the mistakes an operator makes: the same part typed by both officers,
a Ctrl-C in the middle of a PIN change, the old parts after the change.

init-token (same part twice: refused; then done) → root key ceremony with the parts → PIN change (Ctrl-C once;
then done) → root CRL batch with the new parts; each step checked with pkcs11-tool and ``invoke audit.verify``.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ceremony.hsm.pins import combine_parts

from .conftest import (
    CEREMONY_CAST,
    OFFICER_1,
    OFFICER_2,
    SECURITY_OFFICER,
    SYSTEM_PATH,
    Operator,
    Prompt,
    Terminal,
    Workspace,
    _can_unshare,
    make_workspace,
    on_screen,
    openssl,
)

# README.md's commands (test_documented_commands checks them there)
INIT_TOKEN = "invoke ceremony.init-token --ca root --env production"
ROOT = "invoke ceremony.root --env production"
CHANGE_PIN = "invoke ceremony.change-pin --ca root --env production"
ROOT_BATCH = "invoke crl.root-batch --env production"

OFFICERS = (OFFICER_1, OFFICER_2)

pytestmark = [pytest.mark.walk, pytest.mark.xdist_group("walk-tokens")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The operator's checkout with the root's token not initialised yet (SoftHSM's free slot stands for the new
    HSM) and no user PIN variable for it: its PIN will be made of parts. The SO PIN is one PIN from its variable
    (production.example's ``security_officer_quorum`` is 1)."""
    reason = _can_unshare()
    if reason:
        pytest.skip(reason)
    ws = make_workspace(tmp_path_factory.mktemp("walk"), blank=("root", "qualified"))
    # The online subordinate's user PIN is one PIN, in its variable as on its host (never split: its jobs sign
    # unattended); generated now.
    ws.pins[ws.pin_env["qualified"]] = secrets.token_hex(12)
    yield ws


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def need(state: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.skip(f"an earlier step of the walk did not complete: {', '.join(missing)}")


def new_parts() -> dict[str, str]:
    """One part per Crypto Officer, made up at run time (never a constant in the repository)."""
    return {o.name: secrets.token_hex(8) for o in OFFICERS}


class PartTyping:
    """The Crypto Officers at the keyboard: each types their own part when the terminal names them. ``parts`` is
    a list of rounds (a PIN change asks the current parts, then new ones): each name's n-th part prompt takes its
    n-th round; a repeated entry ("the same part again") repeats the part just typed."""

    def __init__(self, *rounds: dict[str, str]) -> None:
        self.rounds = rounds
        self.typed: dict[str, int] = {}
        self.last: dict[str, str] = {}
        self.langs: set[str] = set()
        self.asked_who = 0

    def __call__(self, prompt: Prompt, term: Terminal) -> str | None:
        if prompt.kind == "part_who":
            self.langs.add(prompt.lang)
            self.asked_who += 1
            return OFFICERS[int(prompt.fields["n"]) - 1].name
        if prompt.kind == "part":
            self.langs.add(prompt.lang)
            name = prompt.fields["name"]
            n = self.typed.get(name, 0)
            self.typed[name] = n + 1
            self.last[name] = self.rounds[n][name]
            return self.last[name]
        if prompt.kind == "part_again":
            return self.last[prompt.fields["name"]]
        return None


def root_label(ws: Workspace) -> str:
    return ws.tokens["root"]


def pkcs11_login(ws: Workspace, pin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pkcs11-tool logged in to the root token with ``pin`` (passed in its environment, never argv)."""
    return subprocess.run(["pkcs11-tool", "--module", ws.module, "--token-label", root_label(ws), "--login",
                           "--pin", "env:WALK_PIN", *args], capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": SYSTEM_PATH, "SOFTHSM2_CONF": str(ws.softhsm_conf), "WALK_PIN": pin})


def user_pin(ws: Workspace, parts: dict[str, str], officers: tuple[str, ...] | None = None) -> str:
    names = officers or tuple(o.name for o in OFFICERS)
    return combine_parts([parts[n] for n in names if n in parts], root_label(ws), "user")


def transcript_of(term: Terminal) -> str:
    found = on_screen(term.screen, "transcript", "path")
    assert found, "no transcript path on screen\n" + term.describe()
    return found[-1]["path"]


def audit(ws: Workspace, transcript: str, expect: int) -> Terminal:
    term = ws.run(f"invoke audit.verify {transcript} --artifacts out/production --trust out/production/root.crt.pem",
                  check=expect)
    assert "Traceback" not in term.screen, term.describe()
    return term


def test_documented_commands() -> None:
    from .conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for command in (INIT_TOKEN, ROOT, ROOT_BATCH, "invoke ceremony.init-token --ca "):
        assert f"`{command}" in readme, command
    assert "`invoke ceremony.change-pin --ca root --env production" in readme


def test_same_part_typed_by_both_officers_is_refused(workspace: Workspace, state: dict[str, Any]) -> None:
    """Cheick Oumar and Djénéba type the same part (one of them read it over the other's shoulder): refused before
    the token is touched; the slot is still free, nothing is written but the run's own record."""
    ws = workspace
    same = secrets.token_hex(8)
    typing = PartTyping({o.name: same for o in OFFICERS})
    people = [*CEREMONY_CAST, SECURITY_OFFICER]
    before = set(ws.files())
    term = ws.run(INIT_TOKEN, Operator(people=list(people), on_prompt=typing), check=False)
    assert term.exit_status != 0 and "Traceback" not in term.screen, term.describe()
    assert "same part" in term.screen and same not in term.screen, term.describe()
    assert typing.langs == {"fr"}, f"the part prompts were not in the room's language: {typing.langs}"
    listing = subprocess.run(["pkcs11-tool", "--module", ws.module, "--list-token-slots"], capture_output=True,
                             text=True, check=False, env={"PATH": SYSTEM_PATH, "SOFTHSM2_CONF": str(ws.softhsm_conf)})
    assert root_label(ws) not in listing.stdout, "the token was initialised after a refused entry"
    written = sorted(set(ws.files()) - before)
    assert written and all(p.startswith(("production/transcripts/", "production/manifest.json")) for p in written), \
        written
    state["people"] = people


def test_init_token_with_split_knowledge(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "people")
    ws = workspace
    parts = new_parts()
    typing = PartTyping(parts)
    term = ws.run(INIT_TOKEN, Operator(people=list(state["people"]), on_prompt=typing,
                                       acknowledge_interrupted=True))
    assert typing.typed == {o.name: 1 for o in OFFICERS}, typing.typed
    assert not any(p in term.screen for p in parts.values()), "a part was shown"
    # At the token: each officer alone is refused, both together open it.
    for alone in ((OFFICER_1.name,), (OFFICER_2.name,)):
        proc = pkcs11_login(ws, user_pin(ws, parts, alone), "--list-objects")
        assert proc.returncode != 0 and "CKR_PIN_INCORRECT" in proc.stderr, proc.stdout + proc.stderr
    proc = pkcs11_login(ws, user_pin(ws, parts), "--list-objects")
    assert proc.returncode == 0, proc.stderr
    records = sorted((ws.out / "tokens").glob(f"{root_label(ws)}.*.token.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text(encoding="utf-8"))
    assert [p for p in parts.values() if p in json.dumps(record)] == []
    # Sealed by the token's own sealing key, which no root certifies yet (there is no root yet to verify against):
    # the root key ceremony's certificate for that key anchors it (next step).
    state.update(init=transcript_of(term), parts=parts)


def test_init_token_of_the_online_subordinate_keeps_one_pin(workspace: Workspace, state: dict[str, Any]) -> None:
    """The same quorum of two, the subordinate's token: no part is asked for; its one PIN comes from its variable
    (the one its CRL and OCSP jobs read on the host), and the terminal says why it is not split."""
    need(state, "init")
    ws = workspace
    term = ws.run("invoke ceremony.init-token --ca qualified --env production",
                  Operator(people=list(state["people"]), acknowledge_interrupted=True))
    assert not [p for p in term.prompts if p.kind.startswith("part")], term.describe()
    assert "SCSE_QUALIFIED_PIN" in term.screen and "un seul PIN, non partagé" in term.screen, term.describe()
    assert ws.token_objects("qualified"), "the subordinate's token does not open with the PIN of its variable"


def test_root_key_ceremony_asks_the_officers_for_their_parts(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "init")
    ws = workspace
    typing = PartTyping(state["parts"])
    term = ws.run(ROOT, Operator(on_prompt=typing, acknowledge_interrupted=True))
    assert typing.typed == {o.name: 1 for o in OFFICERS} and typing.asked_who == 0, typing.typed
    assert (ws.out / "root.crt.pem").is_file(), term.describe()
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "root.seal.crt.pem", cwd=ws.out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    audit(ws, transcript_of(term), expect=0)
    # The initialisation's transcript is anchored now: the root certified the sealing key the token was born with.
    audit(ws, state["init"], expect=0)
    state["root"] = transcript_of(term)


def test_pin_change_interrupted_with_ctrl_c(workspace: Workspace, state: dict[str, Any]) -> None:
    """Ctrl-C while the second officer is about to type a new part: nothing changed on the token."""
    need(state, "root")
    ws = workspace
    fresh = new_parts()
    typing = PartTyping(state["parts"], fresh)

    def ctrl_c(prompt: Prompt, term: Terminal) -> bool:
        return prompt.kind == "part" and prompt.fields["name"] == OFFICER_2.name and \
            typing.typed.get(OFFICER_2.name) == 1

    term = ws.run(CHANGE_PIN, Operator(on_prompt=typing, interrupt=ctrl_c), check=False)
    assert term.exit_status != 0 and "Traceback" not in term.screen, term.describe()
    assert pkcs11_login(ws, user_pin(ws, state["parts"]), "--list-objects").returncode == 0
    assert pkcs11_login(ws, user_pin(ws, fresh), "--list-objects").returncode != 0
    state["interrupted"] = transcript_of(term) if on_screen(term.screen, "transcript", "path") else None


def test_pin_change(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "root", "interrupted")
    ws = workspace
    fresh = new_parts()
    typing = PartTyping(state["parts"], fresh)
    term = ws.run(CHANGE_PIN, Operator(on_prompt=typing, acknowledge_interrupted=True))
    assert typing.typed == {o.name: 2 for o in OFFICERS}, typing.typed
    assert pkcs11_login(ws, user_pin(ws, fresh), "--list-objects").returncode == 0
    old = pkcs11_login(ws, user_pin(ws, state["parts"]), "--list-objects")
    assert old.returncode != 0 and "CKR_PIN_INCORRECT" in old.stderr, old.stdout + old.stderr
    reports = sorted((ws.out / "tokens").glob(f"{root_label(ws)}.*pin-change.json"))
    assert len(reports) == 1, reports
    assert not any(p in reports[0].read_text(encoding="utf-8") for p in [*fresh.values(), *state["parts"].values()])
    audit(ws, transcript_of(term), expect=0)
    state.update(changed=transcript_of(term), old_parts=state["parts"], parts=fresh)


def test_old_parts_no_longer_open_the_token_at_a_ceremony(workspace: Workspace, state: dict[str, Any]) -> None:
    """An officer who kept the old part types it at the next root CRL batch: the token refuses the PIN, the
    ceremony says so in one line, and nothing is signed."""
    need(state, "changed")
    ws = workspace
    typing = PartTyping(state["old_parts"])
    before = {p for p in ws.files() if "/crl/" in p or p.endswith(".crl")}
    term = ws.run(ROOT_BATCH, Operator(on_prompt=typing, acknowledge_interrupted=True), check=False)
    assert term.exit_status != 0 and "Traceback" not in term.screen, term.describe()
    after = {p for p in ws.files() if "/crl/" in p or p.endswith(".crl")}
    assert after == before, sorted(after - before)


def test_root_crl_batch_with_the_new_parts(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "changed")
    ws = workspace
    typing = PartTyping(state["parts"])
    term = ws.run(ROOT_BATCH, Operator(on_prompt=typing, acknowledge_interrupted=True))
    crls = re.findall(r"^root CRL (\d+)(?: of \S+)?: .* \((\d+) entries\) (\S+)$", term.screen, re.M)
    assert crls, term.describe()
    for _, _, der in crls:
        proc = openssl("crl", "-inform", "DER", "-in", der, "-noout", "-CAfile", "out/production/root.crt.pem",
                       cwd=ws.root)
        assert proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    audit(ws, transcript_of(term), expect=0)


def test_no_part_in_any_file(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "changed")
    ws = workspace
    secrets_typed = [*state["parts"].values(), *state["old_parts"].values(),
                     user_pin(ws, state["parts"]), user_pin(ws, state["old_parts"])]
    # the checkout (outputs, transcripts, reports, token records) and every command's terminal log
    for path in sorted([*Path(ws.root).rglob("*"), *ws.logs.rglob("*")]):
        if path.is_file() and not path.is_symlink() and ".venv" not in path.parts:
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets_typed), f"{path} holds a part or the PIN"
