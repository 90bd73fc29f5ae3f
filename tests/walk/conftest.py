"""Harness of the production-path walks: a workspace like the operator's checkout, SoftHSM tokens in
place of the HSMs, and commands typed through a pseudo-terminal inside a loopback-only network namespace.

What makes these tests different from the rest of the suite (DESIGN.md, principle 8):

* **the operator's checkout**: a temporary directory holding a copy of the tracked ``tasks/``,
  ``inventory/``, ``docs/`` and ``README.md`` (the engine is installed editable in ``.venv``, which is a
  symlink), with ``inventory/production/`` made from ``inventory/production.example/`` by the edits a
  trial operator makes and nothing else: the PKCS#11 module path becomes SoftHSM's, and a token URI that
  cannot match a SoftHSM token becomes the token's label. Each CA's token is a freshly initialised
  SoftHSM token with that label; the PINs are random, generated at run time, and reach the ceremony
  only through the environment variables the definition names (never argv);
* **production mode** only (never ``--rehearsal``), with the README's command lines and relative paths,
  run from the workspace with ``.venv/bin`` first on ``PATH``;
* **air-gapped**: every command runs under ``unshare -n`` with only loopback up;
* **an explicit minimal environment**: PATH, HOME, LANG, TERM, COLUMNS, SOFTHSM2_CONF and the PIN
  variables; nothing else of the test process's environment;
* **typed**: through a pseudo-terminal with pexpect, answering the sign-in, the bag serials and the
  confirmations as they are asked. Every prompt text is matched in :data:`PROMPTS` and nowhere else.

Each command's whole terminal output goes to a log file under the workspace's ``logs/`` (its path is
printed when a walk fails).

Run them alone with ``.venv/bin/pytest -m walk`` (about a minute and a half on two cores). Each module
walks one checkout in order, so under pytest-xdist use ``--dist loadgroup`` (the modules carry an
``xdist_group``); with another distribution a step whose predecessor ran elsewhere is skipped.
A walk that exposes an engine bug is marked :func:`known_bug` and fails only through :func:`bug`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
# What an operator's checkout holds that the tasks read (the engine itself is installed in .venv).
CHECKOUT_PATHS = ("tasks", "inventory", "docs", "README.md")
# Generous: a ceremony lints, signs and renders four transcript reports (HTML and PDF, fr and en).
TIMEOUT = 600
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COLUMNS = 200  # wide enough that no prompt wraps: each prompt is then the last line on the screen

pexpect = pytest.importorskip("pexpect", reason="pexpect drives the walks (pip install -e '.[dev]')")


# --- what the terminal shows ---------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def screen_text(raw: str) -> str:
    """What a person reads: escape sequences removed, CR LF as LF."""
    return _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "")


# Every prompt the ceremonies ask, in each language of the terminal, matched on the last line of the screen
# (escape sequences removed). THIS IS THE ONE PLACE where prompt texts are known. They are built from the
# engine's own table of terminal texts (``ceremony.common.terminal_text.say``) with each value turned into a
# named group, so a reworded prompt is still recognised; what the walk answers is decided by the kind.
_SENTINEL = "\x00{}\x00"
_PROMPT_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    # kind: (text key, its values)
    "name": ("ask_name", ()),
    "roles": ("ask_roles", ("name", "roles", "keep")),
    "id_document": ("ask_id", ("name",)),
    "id_checked_by": ("ask_checker", ("name",)),
    "bag_open": ("bag_open", ("bag",)),
    "bag_reseal": ("bag_reseal", ("bag",)),
    "interrupted": ("new_transcript_q", ()),
    "decide": ("continue_q", ("name",)),
    "reason": ("decision_q", ()),
    "failure_note": ("failure_note", ("name",)),
    "witness": ("witness_q", ("n", "title")),   # asked as "<witness>: <question>"
    "head": ("head_q", ()),                      # idem
    # PINs and the parts of a split PIN, typed unseen (ceremony/hsm/pins.py)
    "pin": ("pin_user_q", ("token",)),
    "so_pin": ("pin_so_q", ("token",)),
    "part_who": ("part_who_q", ("role", "n", "k", "pin")),
    "part": ("part_q", ("name", "role")),
    "part_again": ("part_again_q", ("name",)),
}
def terminal_texts() -> tuple[tuple[str, ...], Callable[..., str], dict[str, str]]:
    """(languages, say(lang, key, **values), the 'yes' answer per language), from the engine."""
    from ceremony.common.terminal_text import LANGS, YES, say

    return tuple(LANGS), say, {lang: YES[lang][0] for lang in LANGS}


def text_pattern(lang: str, key: str, *names: str, lazy: Mapping[str, str] | None = None) -> str:
    """The regex of the engine's text ``key`` in ``lang``, each value a named group (not anchored)."""
    _, say, _ = terminal_texts()
    marked = say(lang, key, **{n: _SENTINEL.format(n) for n in names})
    out = []
    for i, part in enumerate(marked.split("\x00")):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            out.append(f"(?P<{part}>{(lazy or {}).get(part, '.+?')})")
    return "".join(out)


_SUFFIX = r"(?: \[[^\]]*\])?(?: \([^()]*\))?:\s*$"  # Rich adds " [choices]", " (default)" and ": "


def _build_prompts() -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    langs, _, _ = terminal_texts()
    table = []
    for lang in langs:
        for kind, (key, names) in _PROMPT_KEYS.items():
            body = text_pattern(lang, key, *names, lazy={"keep": ".*?"})
            if kind in ("witness", "head"):
                body = f"(?P<who>.+?): (?P<question>{body})"
            table.append((kind, lang, re.compile("^" + body + _SUFFIX)))
    # pkcs11-tool's own PIN prompt
    table.append(("pin", "", re.compile(r"^Please enter User PIN:\s*$")))
    # any other yes/no question, so that a new confirmation is recorded rather than missed
    table.append(("confirm", "", re.compile(r"^(?P<who>.+?): (?P<question>.+\S) ?\[(?P<yes>[^/\]]+)/[^\]]+\]"
                                            + r"(?: \([^()]*\))?:\s*$")))
    return tuple(table)


PROMPTS = _build_prompts()
# A prompt waits for input after ": " (Rich's Prompt and Confirm, getpass).
_PROMPT_END = re.compile(r": $")
# How long a line ending in ": " that no pattern knows may stay unanswered before the walk gives up.
UNKNOWN_PROMPT_SECONDS = 30


def classify(last_line: str) -> tuple[str, str, dict[str, str]] | None:
    """(kind, language, values) of the prompt on ``last_line``, or None if it is not a known prompt."""
    for kind, lang, rx in PROMPTS:
        m = rx.search(last_line)
        if m:
            return kind, lang, {k: v.strip() for k, v in m.groupdict().items() if v is not None}
    return None


def shown(screen: str, key: str, *names: str) -> bool:
    """Whether the engine's text ``key`` (any language) appears anywhere on ``screen``."""
    return any(re.search(text_pattern(lang, key, *names), screen) for lang in terminal_texts()[0])


def on_screen(screen: str, key: str, *names: str) -> list[dict[str, str]]:
    """Every whole line of ``screen`` that is the engine's text ``key`` (any language), as its values."""
    found = []
    for lang in terminal_texts()[0]:
        rx = re.compile("^" + text_pattern(lang, key, *names) + "$", re.M)
        found += [m.groupdict() for m in rx.finditer(screen)]
    return found


# --- known engine bugs ----------------------------------------------------------------------------------

class EngineBug(AssertionError):
    """The one failure a walk marked :func:`known_bug` expects. Any other failure of that walk (the harness,
    a step before the bug) is reported as a failure, not hidden behind the expected one."""


def bug(holds: bool, message: str) -> None:
    """Check the behaviour a known engine bug breaks (raise :class:`EngineBug` while it is broken)."""
    if not holds:
        raise EngineBug(message)


def known_bug(reason: str) -> pytest.MarkDecorator:
    """``xfail`` for exactly one bug, strictly: the walk fails only through :func:`bug`, and passing
    (the bug fixed) fails the suite until the mark is removed."""
    return pytest.mark.xfail(strict=True, raises=EngineBug, reason=reason)


# --- the people in the room --------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    name: str
    roles: tuple[str, ...]
    id_document: str
    id_checked_by: str


ADMIN = Person("Awa Traoré", ("administrator",), "CNI 081-2219-0041", "Bintou Diallo")
WITNESS = Person("Bintou Diallo", ("internal-witness",), "CNI 081-1187-0930", "Awa Traoré")
OFFICER_1 = Person("Cheick Oumar Keïta", ("crypto-officer",), "Passeport B1234567", "Awa Traoré")
OFFICER_2 = Person("Djénéba Coulibaly", ("crypto-officer",), "CNI 081-3312-7705", "Awa Traoré")
SECURITY_OFFICER = Person("Oumar Sidibé", ("security-officer",), "CNI 081-5540-1200", "Awa Traoré")
AUDITOR = Person("Mariam Haïdara", ("independent-witness",), "Passeport AA0998877", "Awa Traoré")


def custodians(names: list[str]) -> list[Person]:
    return [Person(n, ("custodian",), f"CNI 081-9000-{i:04d}", ADMIN.name) for i, n in enumerate(names, 1)]


CEREMONY_CAST = [ADMIN, WITNESS, OFFICER_1, OFFICER_2, AUDITOR]


# --- one command at the terminal -----------------------------------------------------------------------

@dataclass
class Prompt:
    kind: str
    lang: str
    line: str
    fields: dict[str, str]
    answer: str | None = None  # None: Ctrl-C instead of an answer


@dataclass
class Terminal:
    """One command typed at the pseudo-terminal, and everything it showed and asked."""

    command: str
    child: Any
    log: Path
    screen: str = ""
    prompts: list[Prompt] = field(default_factory=list)
    exit_status: int | None = None
    seconds: float = 0.0

    @property
    def confirmations(self) -> list[str]:
        """Every yes/no question put to someone in the room, as shown."""
        return [p.fields.get("question", p.line) for p in self.prompts if p.kind in CONFIRMATIONS]

    def asked(self, kind: str) -> list[Prompt]:
        return [p for p in self.prompts if p.kind == kind]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.screen.rstrip("\n").splitlines()[-lines:])

    def describe(self) -> str:
        return f"$ {self.command}\n(exit {self.exit_status}; full log: {self.log})\n{self.tail()}"


Policy = Callable[[Prompt, Terminal], str | None]
CONFIRMATIONS = ("witness", "head", "confirm", "decide", "interrupted")


@dataclass
class Operator:
    """Answers what the ceremony asks, as the people in the room would.

    ``people`` sign in in order; ``bags`` gives a serial per bag title (else one is made up and
    remembered); each confirmation is answered ``yes`` unless ``confirm`` says otherwise. ``interrupt``
    is asked at every prompt: when it returns true, Ctrl-C is pressed instead of answering; when it
    returns ``"kill"``, the command is killed with SIGKILL (a power cut, ``kill -9``).
    ``on_prompt`` may answer any prompt first (return the text to type, or None to fall through).
    """

    people: list[Person] = field(default_factory=lambda: list(CEREMONY_CAST))
    bags: dict[str, str] = field(default_factory=dict)
    confirm: Callable[[str], bool] = lambda question: True
    acknowledge_interrupted: bool | None = None  # None: being asked is a failure of the walk
    interrupt: Callable[[Prompt, Terminal], bool | str] = lambda prompt, term: False
    on_prompt: Policy | None = None
    _next: int = 0
    _signed_in: bool = False
    _bag_count: int = 0

    def person(self, who: str, line: str = "") -> Person:
        """The person a prompt is about (a name that ends in "(…)" may have been read as Rich's default)."""
        for p in self.people:
            if p.name == who:
                return p
        near = [p for p in self.people if p.name.startswith(who) and p.name in line]
        if len(near) == 1:
            return near[0]
        raise AssertionError(f"the ceremony asked about {who!r}, who is not in the room")

    def answer(self, prompt: Prompt, term: Terminal) -> str:
        if self.on_prompt is not None:
            given = self.on_prompt(prompt, term)
            if given is not None:
                return given
        k, f = prompt.kind, prompt.fields
        yes = terminal_texts()[2].get(prompt.lang) or f.get("yes") or "y"
        no = "n"
        if k == "name":
            if self._signed_in:
                raise AssertionError("the sign-in was asked again:\n" + term.tail(15))
            if self._next < len(self.people):
                self._next += 1
                return self.people[self._next - 1].name
            self._signed_in = True
            return ""
        if k == "roles":
            if self._signed_in:
                raise AssertionError("the sign-in was asked again:\n" + term.tail(15))
            return ", ".join(self.person(f["name"], prompt.line).roles)
        if k == "id_document":
            return self.person(f["name"], prompt.line).id_document
        if k == "id_checked_by":
            return self.person(f["name"], prompt.line).id_checked_by
        if k in ("bag_open", "bag_reseal"):
            key = f"{f['bag']}|{k}"
            if key not in self.bags:
                self._bag_count += 1
                self.bags[key] = self.bags.get(f["bag"]) or f"SN-{k[4:].upper()}-{self._bag_count:04d}"
            return self.bags[key]
        if k in ("witness", "head", "confirm"):
            return yes if self.confirm(f["question"]) else no
        if k == "interrupted":
            if self.acknowledge_interrupted is None:
                raise AssertionError("the ceremony reports an interrupted transcript:\n" + term.tail(15))
            return yes if self.acknowledge_interrupted else no
        if k == "failure_note":
            return ""
        if k in ("pin", "so_pin"):
            raise AssertionError("a PIN was prompted for, though the definition's PIN variable is set:\n"
                                 + term.tail(10))
        if k in ("part_who", "part", "part_again"):
            raise AssertionError("a part of a split PIN was asked for, and this operator has none planned:\n"
                                 + term.tail(10))
        raise AssertionError(f"no answer planned for the {k} prompt:\n" + term.tail(15))


@dataclass
class Workspace:
    """A temporary copy of the operator's checkout with its own SoftHSM tokens."""

    root: Path
    home: Path
    softhsm_conf: Path
    module: str
    pins: dict[str, str]          # PIN variable -> value (random, generated at run time)
    tokens: dict[str, str]        # CA name -> token label
    pin_env: dict[str, str]       # CA name -> name of its user PIN variable
    edits: list[str]              # what was changed from production.example, for the record
    logs: Path
    _count: int = 0

    @property
    def out(self) -> Path:
        return self.root / "out" / "production"

    def definition(self) -> dict[str, Any]:
        """The operator's inventory/production/pki.yml, as data."""
        return yaml.safe_load((self.root / "inventory" / "production" / "pki.yml").read_text(encoding="utf-8"))

    def key_label(self, ca: str) -> str:
        return str(self.definition()["cas"][ca]["hsm"]["key_label"])

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The explicit minimal environment of every command (PIN variables included)."""
        env = {"PATH": f"{self.root / '.venv' / 'bin'}:{SYSTEM_PATH}", "HOME": str(self.home),
               "LANG": "C.UTF-8", "TERM": "xterm-256color", "COLUMNS": str(COLUMNS),
               "SOFTHSM2_CONF": str(self.softhsm_conf), **self.pins}
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def spawn(self, command: str, env: Mapping[str, str] | None = None) -> Terminal:
        """Start ``command`` (split like a shell would, no shell) in the namespace, at a terminal."""
        import shlex

        self._count += 1
        argv = shlex.split(command)
        slug = re.sub(r"[^a-z0-9]+", "-", " ".join(argv[1:3]).lower()).strip("-")[:40]
        log = self.logs / f"{self._count:02d}-{slug}.log"
        child = pexpect.spawn("unshare", ["-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv],
                              cwd=str(self.root), env=dict(env or self.env()), encoding="utf-8",
                              codec_errors="replace", timeout=TIMEOUT, dimensions=(50, COLUMNS),
                              echo=True)
        child.logfile_read = log.open("w", encoding="utf-8")
        return Terminal(command, child, log)

    def run(self, command: str, operator: Operator | None = None, env: Mapping[str, str] | None = None,
            check: bool | int = True) -> Terminal:
        """Type ``command``, answer every prompt as ``operator`` says, wait for the end.

        ``check``: True asserts exit 0, an int asserts that exit status, False asserts nothing.
        """
        operator = operator or Operator()
        term = self.spawn(command, env)
        start = time.monotonic()
        child = term.child
        try:
            unknown = False
            while True:
                i = child.expect([_PROMPT_END, pexpect.EOF],
                                 timeout=UNKNOWN_PROMPT_SECONDS if unknown else TIMEOUT)
                chunk = child.before + (child.after if isinstance(child.after, str) else "")
                term.screen += screen_text(chunk)
                if i == 1:
                    break
                last = term.screen.rsplit("\n", 1)[-1]
                # A prompt starts at the left margin; an indented or "[ok  ]" line is output cut short.
                found = None if last[:1].isspace() or last.startswith("[") else classify(last)
                unknown = found is None
                if found is None:
                    continue  # ": " inside ordinary output, or a prompt no pattern knows (then: time-out)
                prompt = Prompt(found[0], found[1], last, found[2])
                term.prompts.append(prompt)
                action = operator.interrupt(prompt, term)
                if action == "kill":
                    os.kill(child.pid, signal.SIGKILL)
                    continue
                if action:
                    child.sendintr()
                    continue
                prompt.answer = operator.answer(prompt, term)
                child.sendline(prompt.answer)
        except pexpect.TIMEOUT:
            term.screen += screen_text(child.before or "")
            child.close(force=True)
            last = term.screen.rsplit("\n", 1)[-1]
            what = (f"a prompt no pattern of PROMPTS knows: {last!r}" if unknown and last.endswith(": ")
                    else f"the command hangs (no prompt, no end after {TIMEOUT} s)")
            raise AssertionError(f"{what}\n" + term.describe()) from None
        except BaseException:
            child.close(force=True)
            raise
        child.close()
        term.exit_status = child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0)
        term.seconds = time.monotonic() - start
        child.logfile_read.close()
        leaked = [var for var, value in self.pins.items() if value in term.screen]
        assert not leaked, f"the value of {leaked} appears on the terminal\n" + term.describe()
        if check is not False:
            want = 0 if check is True else check
            assert term.exit_status == want, f"expected exit {want}\n" + term.describe()
        return term

    def task_help(self, task: str) -> str:
        """``invoke --help TASK`` as the operator reads it (cached)."""
        cache = self.__dict__.setdefault("_help", {})
        if task not in cache:
            cache[task] = self.run(f"invoke --help {task}").screen
        return cache[task]

    # --- independent looks at the state ----------------------------------------------------------------
    def token_objects(self, ca: str, label: str | None = None) -> list[str]:
        """``pkcs11-tool --list-objects`` after a login with the CA's user PIN (read from the environment)."""
        var = self.pin_env[ca]
        proc = subprocess.run(
            ["pkcs11-tool", "--module", self.module, "--token-label", label or self.tokens[ca], "--login",
             "--pin", f"env:{var}", "--list-objects"],
            capture_output=True, text=True, check=False, timeout=120,
            env={"PATH": SYSTEM_PATH, "SOFTHSM2_CONF": str(self.softhsm_conf), var: self.pins[var]})
        assert proc.returncode == 0, f"pkcs11-tool failed: {proc.stderr}"
        objects = []
        for line in proc.stdout.splitlines():
            if re.match(r"^(Private Key|Public Key|Secret Key|Certificate|Data) [Oo]bject", line):
                objects.append(line.split(";")[0].strip())
            elif line.strip().startswith("label:") and objects:
                objects[-1] += " " + line.strip()
        return objects

    def files(self) -> dict[str, str]:
        """Every file under out/ (relative path -> SHA-256)."""
        base = self.root / "out"
        if not base.exists():
            return {}
        return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(base.rglob("*")) if p.is_file()}

    def manifest(self) -> dict[str, Any]:
        path = self.out / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def snapshot(self) -> Snapshot:
        return Snapshot(self.files(), self.manifest(), {ca: self.token_objects(ca) for ca in self.tokens})


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, str]
    manifest: dict[str, Any]
    objects: dict[str, list[str]]

    def new_files(self, later: Snapshot) -> list[str]:
        return sorted(set(later.files) - set(self.files))

    def changed_files(self, later: Snapshot) -> list[str]:
        return sorted(p for p in self.files if later.files.get(p) != self.files[p])


# --- making a workspace ------------------------------------------------------------------------------

_INIT_TOKENS = """
import json, sys
from ceremony.hsm import softhsm
spec = json.load(sys.stdin)
for label, (user, so) in spec["tokens"].items():
    softhsm.init_token(softhsm.Path(spec["conf"]), label, user, so, spec["module"])
"""


def init_tokens(conf: Path, module: str, tokens: dict[str, tuple[str, str]]) -> None:
    """Initialise SoftHSM tokens in a child process (this one may hold SoftHSM with another
    configuration); the PINs travel on its standard input, never on a command line."""
    proc = subprocess.run([str(VENV / "bin" / "python"), "-c", _INIT_TOKENS],
                          input=json.dumps({"conf": str(conf), "module": module, "tokens": tokens}),
                          capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": SYSTEM_PATH, "SOFTHSM2_CONF": str(conf), "HOME": str(conf.parent)})
    assert proc.returncode == 0, f"token initialisation failed: {proc.stderr}"


def copy_checkout(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", *CHECKOUT_PATHS], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    (target / ".venv").symlink_to(VENV)


def token_label(token: Mapping[str, Any]) -> tuple[str, bool]:
    """The label a SoftHSM token gets for this token reference, and whether the reference must change
    (a URI with attributes a SoftHSM token does not have, such as the vendor's model, never matches)."""
    if "label" in token:
        return str(token["label"]), False
    if "uri" in token:
        attrs = dict(part.split("=", 1) for part in str(token["uri"]).removeprefix("pkcs11:").split(";") if part)
        label = urllib.parse.unquote(attrs.get("token", ""))
        assert label, f"the example's token URI names no token label: {token['uri']}"
        return label, set(attrs) != {"token"}
    raise AssertionError(f"the example selects a token by serial ({token}); a SoftHSM serial cannot be chosen")


def adapt_definition(example: str, module: str) -> tuple[str, dict[str, str], dict[str, str], list[str]]:
    """production.example's pki.yml with the trial operator's edits: the module path, and a token URI
    that cannot match SoftHSM replaced by the token's label. Returns the text, CA -> token label,
    CA -> PIN variable, and the list of edits."""
    data = yaml.safe_load(example)
    labels: dict[str, str] = {}
    pin_env: dict[str, str] = {}
    lines = example.splitlines(keepends=True)
    edits: list[str] = []
    for name, ca in data["cas"].items():
        label, change = token_label(ca["hsm"]["token"])
        labels[name] = label
        pin_env[name] = ca["hsm"]["pin_env"]
    # Edit lines in place (comments kept): every `module:` of an hsm block, and token references.
    for i, line in enumerate(lines):
        m = re.match(r"^(\s+module:\s*)(\S+)(.*)$", line.rstrip("\n"))
        if m and m.group(2) != module:
            lines[i] = f"{m.group(1)}{module}{m.group(3)}\n"
            edits.append(f"line {i + 1}: module {m.group(2)} -> {module}")
            continue
        m = re.match(r"^(\s+token:\s*)(\{.*?\})(.*)$", line.rstrip("\n"))
        if m:
            label, change = token_label(yaml.safe_load(m.group(2)))
            if change:
                lines[i] = f"{m.group(1)}{{label: {label}}}{m.group(3)}\n"
                edits.append(f"line {i + 1}: token {m.group(2)} -> {{label: {label}}}")
    text = "".join(lines)
    adapted = yaml.safe_load(text)
    for name, ca in adapted["cas"].items():
        assert ca["hsm"]["module"] == module, f"cas.{name}.hsm.module was not adapted"
    return text, labels, pin_env, edits


def make_workspace(base: Path, blank: Sequence[str] = ()) -> Workspace:
    """``blank``: CAs whose token is left uninitialised (a new HSM, for the token initialisation ceremony), with no
    user PIN variable set (its PIN will be made of the Crypto Officers' parts); their SO PIN variable is set."""
    from ceremony.hsm import softhsm

    root = base / "checkout"
    root.mkdir(parents=True)
    copy_checkout(root)
    example = root / "inventory" / "production.example"
    production = root / "inventory" / "production"
    shutil.copytree(example, production)
    module = softhsm.softhsm_module()
    text, labels, pin_env, edits = adapt_definition((example / "pki.yml").read_text(encoding="utf-8"), module)
    (production / "pki.yml").write_text(text, encoding="utf-8")
    data = yaml.safe_load(text)
    pins: dict[str, str] = {}
    tokens: dict[str, tuple[str, str]] = {}
    for name, ca in data["cas"].items():
        user, so = softhsm.random_pin(), softhsm.random_pin()
        if ca["hsm"].get("so_pin_env"):
            pins[ca["hsm"]["so_pin_env"]] = so
        if name in blank:
            continue
        pins[ca["hsm"]["pin_env"]] = user
        tokens[labels[name]] = (user, so)
    conf = softhsm.write_config(base / "hsm")
    init_tokens(conf, module, tokens)
    home = base / "home"
    home.mkdir()
    logs = base / "logs"
    logs.mkdir()
    return Workspace(root, home, conf, module, pins, labels, pin_env, edits, logs)


def add_token(ws: Workspace, label: str, like_ca: str) -> None:
    """A fresh, initialised token (a replacement HSM) with the same user PIN as ``like_ca``'s token."""
    user = ws.pins[ws.pin_env[like_ca]]
    from ceremony.hsm import softhsm

    init_tokens(ws.softhsm_conf, ws.module, {label: (user, softhsm.random_pin())})


def _can_unshare() -> str | None:
    if os.geteuid() != 0:
        return "the walks run commands in a network namespace (unshare -n): run the tests as root"
    if shutil.which("unshare") is None or shutil.which("ip", path=SYSTEM_PATH) is None:
        return "unshare (util-linux) and ip (iproute2) are needed"
    if shutil.which("pkcs11-tool") is None or shutil.which("openssl") is None:
        return "pkcs11-tool (opensc) and openssl are needed: scripts/bootstrap.sh"
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A fresh operator checkout with fresh tokens, shared by the tests of one module (in order)."""
    reason = _can_unshare()
    if reason:
        pytest.skip(reason)
    ws = make_workspace(tmp_path_factory.mktemp("walk"))
    print(f"walk workspace {ws.root}; edits from production.example: {'; '.join(ws.edits)}")
    yield ws


# --- independent checkers ------------------------------------------------------------------------------

def openssl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})


def openssl_fingerprint(path: Path) -> str:
    proc = openssl("x509", "-in", str(path), "-noout", "-fingerprint", "-sha256")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("=", 1)[1]


@contextlib.contextmanager
def unchanged(ws: Workspace, allow: Callable[[str], bool] = lambda p: False) -> Iterator[Snapshot]:
    """Assert that the block leaves out/ and every token as they were (``allow`` may accept some new or
    changed files, by path relative to out/)."""
    before = ws.snapshot()
    yield before
    after = ws.snapshot()
    new = [p for p in before.new_files(after) if not allow(p)]
    assert not new, f"new files under out/: {new}"
    changed = [p for p in before.changed_files(after) if not allow(p)]
    assert not changed, f"files changed under out/: {changed}"
    assert after.objects == before.objects, f"token objects changed: {before.objects} -> {after.objects}"
