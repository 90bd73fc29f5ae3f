"""The data the CP/CPS are written from besides the facts: requirements, glossary, ETSI map.

Three files beside this module, each read once and validated here so that a mistake in them is one
clear message naming the file and the entry:

* ``cp-requirements.yml`` — the normative content of the CP (one identifier per requirement, French and
  English) and the CPS's answer to each; the CP is rendered from it and the check holds the CPS to it;
* ``glossary.yml`` — the terms both documents use (French authoritative), the spellings refused, the
  French reading of the engine's identifiers, and the English words a French table must not hold;
* ``etsi-map.yml`` — the ETSI requirement identifiers the service claims, each with the CPS section
  that addresses it and a one-line paraphrase in the Service's own words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ceremony.policy.facts import PolicyError
from ceremony.policy.outline import BY_NUMBER, LANGS

DATA_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = DATA_DIR / "cp-requirements.yml"
GLOSSARY_FILE = DATA_DIR / "glossary.yml"
ETSI_MAP_FILE = DATA_DIR / "etsi-map.yml"

REQUIREMENT_ID = re.compile(r"^PC-[0-9]+(?:\.[0-9]+)*-[a-z]$")
#: How a requirement's identifier appears in both documents: ``**[PC-4.9.5-a]**``.
REQUIREMENT_TAG = re.compile(r"\*\*\[(PC-[0-9]+(?:\.[0-9]+)*-[a-z])\]\*\*")


@dataclass(frozen=True)
class Requirement:
    id: str
    section: str
    text: dict[str, str]
    answer: dict[str, str]  # empty when the CPS answers in a fragment that cites the identifier
    etsi: tuple[str, ...]


@dataclass(frozen=True)
class Term:
    fr: str
    en: str
    fr_abbr: str
    en_abbr: str
    definition: dict[str, str]
    avoid: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Glossary:
    terms: tuple[Term, ...]
    values: dict[str, str]
    english_in_french: frozenset[str]


@dataclass(frozen=True)
class EtsiClaim:
    id: str
    standard: str
    section: str
    text: dict[str, str]
    #: A capability the claim holds only with: ``ocsp`` (a CA of the definition has an ``ocsp`` section); empty for
    #: a claim that always holds. A claim whose capability is absent is neither in the annex nor checked.
    requires: str = ""

    def applies(self, facts: Any) -> bool:
        """Whether the definition behind ``facts`` makes this claim (None: every claim, for a check without facts)."""
        if not self.requires or facts is None:
            return True
        return bool(facts.ocsp_cas)


#: What ``requires`` may name.
CLAIM_CAPABILITIES = ("ocsp",)


@dataclass(frozen=True)
class EtsiMap:
    editions: dict[str, str]
    claims: tuple[EtsiClaim, ...]


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: unreadable: {exc}") from None


def _text(path: Path, where: str, entry: dict[str, Any], key: str, required: bool = True) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{path}: {where}: '{key}' must be a non-empty string")
    return value.strip()


def parse_requirements(data: Any, path: Path = REQUIREMENTS_FILE) -> tuple[Requirement, ...]:
    """Validate the catalogue: unique well-formed identifiers, sections of RFC 3647 without subsections."""
    items = data.get("requirements") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{path}: must hold a non-empty 'requirements' list")
    result: list[Requirement] = []
    seen: set[str] = set()
    for i, entry in enumerate(items):
        where = f"requirements[{i}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{path}: {where}: must be a mapping")
        rid = _text(path, where, entry, "id")
        where = f"{where} ({rid})"
        section = str(entry.get("section", ""))
        if not REQUIREMENT_ID.match(rid) or not rid.startswith(f"PC-{section}-"):
            raise PolicyError(f"{path}: {where}: the identifier must read 'PC-<section>-<letter>' with its own "
                              f"section ({section!r})")
        if rid in seen:
            raise PolicyError(f"{path}: {where}: identifier used twice")
        seen.add(rid)
        if section not in BY_NUMBER:
            raise PolicyError(f"{path}: {where}: section {section!r} is not in the RFC 3647 outline")
        etsi = entry.get("etsi") or []
        if not isinstance(etsi, list) or not all(isinstance(e, str) for e in etsi):
            raise PolicyError(f"{path}: {where}: 'etsi' must be a list of identifiers")
        result.append(Requirement(
            id=rid, section=section, text={lang: _text(path, where, entry, lang) for lang in LANGS},
            answer={lang: a for lang in LANGS if (a := _text(path, where, entry, f"answer_{lang}", False))},
            etsi=tuple(etsi)))
    return tuple(result)


def parse_glossary(data: Any, path: Path = GLOSSARY_FILE) -> Glossary:
    if not isinstance(data, dict) or not isinstance(data.get("terms"), list):
        raise PolicyError(f"{path}: must hold a 'terms' list")
    terms = []
    for i, entry in enumerate(data["terms"]):
        where = f"terms[{i}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{path}: {where}: must be a mapping")
        avoid = {}
        for lang in LANGS:
            words = entry.get(f"avoid_{lang}") or []
            if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
                raise PolicyError(f"{path}: {where}: 'avoid_{lang}' must be a list of strings")
            avoid[lang] = tuple(words)
        terms.append(Term(fr=_text(path, where, entry, "fr"), en=_text(path, where, entry, "en"),
                          fr_abbr=_text(path, where, entry, "fr_abbr", False),
                          en_abbr=_text(path, where, entry, "en_abbr", False),
                          definition={lang: _text(path, where, entry, f"def_{lang}") for lang in LANGS},
                          avoid=avoid))
    values = data.get("values") or {}
    words = data.get("english_in_french") or []
    if not isinstance(values, dict) or not isinstance(words, list):
        raise PolicyError(f"{path}: 'values' must be a mapping and 'english_in_french' a list")
    # YAML reads yes/no/true/false as booleans: the check compares text, so keep the text.
    return Glossary(terms=tuple(terms), values={str(k): str(v) for k, v in values.items()},
                    english_in_french=frozenset(str(w) for w in words))


def parse_etsi_map(data: Any, path: Path = ETSI_MAP_FILE) -> EtsiMap:
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise PolicyError(f"{path}: must hold 'editions' and a 'claims' list")
    claims = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(data["claims"]):
        where = f"claims[{i}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{path}: {where}: must be a mapping")
        cid = _text(path, where, entry, "id")
        standard = _text(path, where, entry, "standard")
        if (standard, cid) in seen:
            raise PolicyError(f"{path}: {where} ({cid}): claimed twice for {standard}")
        seen.add((standard, cid))
        requires = str(entry.get("requires") or "")
        if requires and requires not in CLAIM_CAPABILITIES:
            raise PolicyError(f"{path}: {where} ({cid}): requires {requires!r}; allowed: "
                              f"{', '.join(CLAIM_CAPABILITIES)} (or nothing, for a claim that always holds)")
        claims.append(EtsiClaim(id=cid, standard=standard, section=str(entry.get("section") or ""),
                                text={lang: _text(path, f"{where} ({cid})", entry, lang) for lang in LANGS},
                                requires=requires))
    editions = data.get("editions") or {}
    return EtsiMap(editions={str(k): str(v) for k, v in editions.items()}, claims=tuple(claims))


@lru_cache(maxsize=1)
def requirements() -> tuple[Requirement, ...]:
    return parse_requirements(_load(REQUIREMENTS_FILE))


@lru_cache(maxsize=1)
def glossary() -> Glossary:
    return parse_glossary(_load(GLOSSARY_FILE))


@lru_cache(maxsize=1)
def etsi_map() -> EtsiMap:
    return parse_etsi_map(_load(ETSI_MAP_FILE))
