"""Ceremony scripts as data: acts and steps in versioned YAML (``ceremony/scripts/<name>.yml``).

A key ceremony follows a written script (Baseline Requirements 6.1.1.1, the IANA root zone KSK
ceremonies): acts made of steps, each step performed by a named role, some confirmed by a
witness. Keeping the script as data rather than code lets the transcript record its exact
SHA-256, lets the auditor's verifier replay it, and lets the report print it.

Acts of ``kind: transcript`` (sign-in, bags-open, bags-reseal, sign-out) carry no steps: the
transcript runs them itself around the ceremony. Every other act lists steps whose ids are the
ids the engine reports through :meth:`ceremony.recorder.Recorder.step`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ceremony.common.errors import DefinitionError

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"


TRANSCRIPT_ACTS = ("sign-in", "bags-open", "bags-reseal", "sign-out")


TRANSCRIPT_ACT_TITLES = {
    "sign-in": {"en": "Sign-in and identity checks", "fr": "Émargement d'entrée et contrôle des identités"},
    "bags-open": {"en": "Opening of the tamper-evident bags", "fr": "Ouverture des sacs inviolables"},
    "bags-reseal": {"en": "Resealing in tamper-evident bags", "fr": "Remise sous sacs inviolables"},
    "sign-out": {"en": "Sign-out", "fr": "Émargement de sortie"},
}


STEP_ROLES = ("administrator", "internal-witness", "crypto-officer", "security-officer", "custodian",
              "independent-witness")


_STEP_KEYS = {"id", "role", "witness", "produces", "title", "repeat"}


_ACT_KEYS = {"id", "kind", "title", "steps"}


_TOP_KEYS = {"name", "version", "title", "independent_witness", "custodians", "bags", "acts"}


@dataclass(frozen=True)
class Step:
    id: str
    act: str
    role: str
    witness: bool
    produces: tuple[str, ...]
    title: dict[str, str]
    repeat: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "act": self.act, "role": self.role, "witness": self.witness,
                "produces": list(self.produces), "title": dict(self.title), "repeat": self.repeat}


@dataclass(frozen=True)
class Act:
    id: str
    kind: str  # "ceremony" or "transcript"
    title: dict[str, str]
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Bag:
    id: str
    title: dict[str, str]


@dataclass(frozen=True)
class Script:
    """A validated ceremony script with the SHA-256 of the exact bytes it was read from."""

    name: str
    version: int
    title: dict[str, str]
    independent_witness: str  # "required" or "optional"
    custodians: bool
    bags: tuple[Bag, ...]
    acts: tuple[Act, ...]
    sha256: str
    source: str = field(repr=False)
    data: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def steps(self) -> list[Step]:
        return [s for a in self.acts for s in a.steps]

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def index(self, step_id: str) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s.id == step_id), None)

    def act(self, act_id: str) -> Act | None:
        return next((a for a in self.acts if a.id == act_id), None)

    def roles(self) -> set[str]:
        """Roles that must be present: those of the steps, plus Administrator and Internal Witness."""
        roles = {s.role for s in self.steps} | {"administrator", "internal-witness"}
        if self.custodians:
            roles.add("custodian")
        return roles


def _fail(where: str, path: str, problem: str, allowed: str | None = None) -> DefinitionError:
    return DefinitionError(where, path, problem, allowed)


def _title(where: str, path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != {"en", "fr"} or not all(
            isinstance(v, str) and v.strip() for v in value.values()):
        raise _fail(where, path, "needs a title in English and French", "{en: ..., fr: ...}")
    return {"en": value["en"], "fr": value["fr"]}


def parse_script(text: str, where: str) -> Script:
    """Validate a script's YAML text; ``where`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(where, "", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(where, "", "a ceremony script is a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(where, sorted(unknown)[0], "unknown key", ", ".join(sorted(_TOP_KEYS)))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, "name", "required: the script name")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(where, "version", "must be a whole number", "1, 2, ...")
    witness = data.get("independent_witness", "required")
    if witness not in ("required", "optional"):
        raise _fail(where, "independent_witness", f"{witness!r} is not allowed", "required, optional")
    custodians = data.get("custodians", False)
    if not isinstance(custodians, bool):
        raise _fail(where, "custodians", "must be true or false")
    bags = []
    for i, b in enumerate(data.get("bags") or []):
        if not isinstance(b, dict) or set(b) != {"id", "en", "fr"}:
            raise _fail(where, f"bags[{i}]", "a bag has id, en and fr")
        bags.append(Bag(str(b["id"]), {"en": b["en"], "fr": b["fr"]}))
    acts: list[Act] = []
    seen_steps: set[str] = set()
    raw_acts = data.get("acts")
    if not isinstance(raw_acts, list) or not raw_acts:
        raise _fail(where, "acts", "a script needs a list of acts")
    for i, a in enumerate(raw_acts):
        path = f"acts[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("id"), str):
            raise _fail(where, path, "an act is a mapping with an id")
        unknown = set(a) - _ACT_KEYS
        if unknown:
            raise _fail(where, f"{path}.{sorted(unknown)[0]}", "unknown key", ", ".join(sorted(_ACT_KEYS)))
        if a.get("kind") == "transcript":
            if a["id"] not in TRANSCRIPT_ACTS or "steps" in a:
                raise _fail(where, f"{path}.id", f"{a['id']!r} is not an act the transcript runs",
                            ", ".join(TRANSCRIPT_ACTS))
            acts.append(Act(a["id"], "transcript", dict(TRANSCRIPT_ACT_TITLES[a["id"]])))
            continue
        if a.get("kind", "ceremony") != "ceremony":
            raise _fail(where, f"{path}.kind", f"{a.get('kind')!r} is not allowed", "ceremony, transcript")
        steps: list[Step] = []
        for j, s in enumerate(a.get("steps") or []):
            spath = f"{path}.steps[{j}]"
            if not isinstance(s, dict):
                raise _fail(where, spath, "a step is a mapping")
            unknown = set(s) - _STEP_KEYS
            if unknown:
                raise _fail(where, f"{spath}.{sorted(unknown)[0]}", "unknown key", ", ".join(sorted(_STEP_KEYS)))
            sid = s.get("id")
            if not isinstance(sid, str) or not sid:
                raise _fail(where, f"{spath}.id", "required")
            if sid in seen_steps:
                raise _fail(where, f"{spath}.id", f"step {sid!r} appears twice")
            seen_steps.add(sid)
            if s.get("role") not in STEP_ROLES:
                raise _fail(where, f"{spath}.role", f"{s.get('role')!r} is not a role", ", ".join(STEP_ROLES))
            if not isinstance(s.get("witness"), bool):
                raise _fail(where, f"{spath}.witness", "must be true or false")
            if not isinstance(s.get("repeat", False), bool):
                raise _fail(where, f"{spath}.repeat", "must be true or false")
            produces = s.get("produces") or []
            if not isinstance(produces, list) or not all(isinstance(p, str) for p in produces):
                raise _fail(where, f"{spath}.produces", "must be a list of strings")
            steps.append(Step(sid, a["id"], s["role"], s["witness"], tuple(produces),
                              _title(where, f"{spath}.title", s.get("title")), s.get("repeat", False)))
        if not steps:
            raise _fail(where, f"{path}.steps", "a ceremony act needs at least one step")
        acts.append(Act(a["id"], "ceremony", _title(where, f"{path}.title", a.get("title")), tuple(steps)))
    ids = [a.id for a in acts]
    if len(set(ids)) != len(ids):
        raise _fail(where, "acts", "act ids must be unique")
    if ids[:2] != ["sign-in", "bags-open"] or ids[-2:] != ["bags-reseal", "sign-out"]:
        raise _fail(where, "acts", "a script opens with sign-in and bags-open and closes with bags-reseal and "
                    "sign-out")
    return Script(name=name, version=version, title=_title(where, "title", data.get("title")),
                  independent_witness=witness, custodians=custodians, bags=tuple(bags), acts=tuple(acts),
                  sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), source=text, data=data)


def available() -> list[str]:
    return sorted(p.stem for p in SCRIPTS_DIR.glob("*.yml"))


def load_script(name: str, directory: Path = SCRIPTS_DIR) -> Script:
    """The shipped script ``name``; an unknown name lists the scripts there are."""
    path = directory / f"{name}.yml"
    if not path.is_file():
        raise _fail(str(path), "", f"no ceremony script named {name!r}", ", ".join(available()))
    text = path.read_text(encoding="utf-8")
    script = parse_script(text, str(path))
    if script.name != name:
        raise _fail(str(path), "name", f"the script calls itself {script.name!r}", name)
    return script


def script_json(script: Script) -> str:
    """The script as canonical JSON, for embedding in a transcript header."""
    return json.dumps(script.data, sort_keys=True, ensure_ascii=False, default=str)
