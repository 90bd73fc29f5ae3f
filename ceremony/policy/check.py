"""``invoke docs.check``: the CP/CPS follow RFC 3647, say something everywhere, and still tell the truth.

Checks, for each document (CP, CPS) and language (fr, en):

1. **outline** — the numbered headings are exactly those of RFC 3647, numbered and titled as in
   :mod:`ceremony.policy.outline`, in order, at the right level;
2. **no empty section** — every section without subsections has text ("Aucune stipulation." /
   "No stipulation." counts as text, a blank does not);
3. **no vague wording** — words such as "periodically" / "périodiquement" where a number belongs
   (the list is configurable: ``<policy dir>/vague-wording.yml`` with ``fr:`` and ``en:`` lists);
4. **drift** — the documents are rendered again from the current definition, certificates, CRLs and
   fragments; any section that differs is named with the old and the new text (a re-issued
   certificate, a changed CRL interval, a moved URL);
5. the HTML is the rendering of the Markdown, the PDF's text layer carries the Markdown's SHA-256,
   and the manifest lists each file with its hash.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from ceremony.common.pdf import pdf_text
from ceremony.policy.facts import PolicyError, read_manifest
from ceremony.policy.outline import LANGS, OUTLINE, has_children
from ceremony.policy.render import (
    DOCS_DIR,
    NUMBERED_HEADING,
    default_policy_dir,
    document_meta,
    render_all,
    render_html,
    section_differences,
)

# Words that promise nothing checkable. Mozilla Root Store Policy 3.3 asks for numbers instead.
DEFAULT_VAGUE: dict[str, list[str]] = {
    "fr": ["périodiquement", "régulièrement", "de temps en temps", "en temps utile", "dans les meilleurs délais",
           "dès que possible", "si nécessaire", "au besoin", "raisonnablement", "dans un délai raisonnable",
           "fréquemment"],
    "en": ["periodically", "regularly", "from time to time", "in a timely manner", "as soon as possible",
           "as soon as practicable", "when necessary", "as needed", "reasonably", "within a reasonable time",
           "promptly", "frequently"],
}


VAGUE_FILE = "vague-wording.yml"


def vague_wording(policy_dir: Path | None) -> dict[str, list[str]]:
    """The default list, replaced per language by ``vague-wording.yml`` when the policy directory has one."""
    words = {k: list(v) for k, v in DEFAULT_VAGUE.items()}
    if policy_dir is None or not (policy_dir / VAGUE_FILE).is_file():
        return words
    path = policy_dir / VAGUE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - set(LANGS):
        raise PolicyError(f"{path}: must map languages to lists of words (allowed keys: {', '.join(LANGS)})")
    for lang, items in data.items():
        if not isinstance(items, list) or not all(isinstance(w, str) and w.strip() for w in items):
            raise PolicyError(f"{path}: {lang}: must be a list of non-empty strings")
        words[lang] = [w.strip() for w in items]
    return words


def outline_problems(label: str, md: str, lang: str) -> list[str]:
    """Headings against RFC 3647: same numbers, titles, levels and order; no leaf section left empty."""
    problems: list[str] = []
    headings: list[tuple[int, int, str, str]] = []  # (line index, level, number, title)
    lines = md.splitlines()
    in_fence = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else NUMBERED_HEADING.match(line)
        if m:
            headings.append((i, len(m.group(1)), m.group(2), m.group(3)))
    for pos, section in enumerate(OUTLINE):
        if pos >= len(headings):
            problems.append(f"{label}: section {section.number} ({section.title(lang)}) is missing "
                            f"(the document ends after {headings[-1][2] if headings else 'no section'})")
            return problems
        _, level, number, title = headings[pos]
        expected_title = section.title(lang)
        if number != section.number:
            problems.append(f"{label}: heading {pos + 1} is {number} {title!r}; RFC 3647 puts section "
                            f"{section.number} ({expected_title}) here")
            return problems
        if title != expected_title:
            problems.append(f"{label}: section {number} is titled {title!r}; RFC 3647 calls it {expected_title!r}")
        if level != section.level:
            problems.append(f"{label}: section {number} is a level-{level} heading; it must be level {section.level}")
    for _, _, number, title in headings[len(OUTLINE):]:
        problems.append(f"{label}: section {number} ({title}) is not in the RFC 3647 outline")
    for k, (i, _, number, _) in enumerate(headings):
        end = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        if not has_children(number) and not "\n".join(lines[i + 1:end]).strip():
            problems.append(f"{label}: section {number} is empty (write the text, or 'Aucune stipulation.' / "
                            "'No stipulation.' where nothing is required)")
    return problems


def vague_problems(label: str, md: str, words: list[str]) -> list[str]:
    problems = []
    section = "front matter"
    for line in md.splitlines():
        m = NUMBERED_HEADING.match(line)
        if m:
            section = f"section {m.group(2)}"
            continue
        for w in words:
            if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", line, flags=re.IGNORECASE):
                problems.append(f"{label}: {section}: vague wording {w!r}: state a number or a date instead")
    return problems


def _manifest_problems(out: Path, paths: list[Path]) -> list[str]:
    manifest = read_manifest(out)
    listed = {a["path"]: a for a in manifest.get("artifacts", [])}
    problems = []
    for path in paths:
        if not path.exists():
            continue
        rel = path.resolve().relative_to(out.resolve()).as_posix()
        entry = listed.get(rel)
        if entry is None:
            problems.append(f"{path}: not listed in {out / 'manifest.json'}")
        elif entry.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            problems.append(f"{path}: its SHA-256 differs from the manifest's (changed after it was built)")
    return problems


def check_documents(defn: Any, out: str | Path, policy_dir: Path | None = None) -> list[Path]:
    """Run every check; return the files checked or raise :class:`PolicyError` listing every problem."""
    out_dir = Path(out)
    policy_dir = policy_dir or default_policy_dir(defn)
    words = vague_wording(policy_dir)
    facts, expected = render_all(defn, out_dir, policy_dir)
    problems: list[str] = []
    checked: list[Path] = []
    for d in expected:
        base = out_dir / DOCS_DIR / d.stem
        md_path, html_path, pdf_path = (Path(f"{base}.{ext}") for ext in ("md", "html", "pdf"))
        if not md_path.is_file():
            problems.append(f"{md_path}: missing (run invoke docs.build)")
            continue
        md = md_path.read_text(encoding="utf-8")
        checked.append(md_path)
        problems += outline_problems(str(md_path), md, d.lang)
        problems += vague_problems(str(md_path), md, words[d.lang])
        problems += section_differences(str(md_path), md, d.markdown, d.lang)
        source = hashlib.sha256(md.encode("utf-8")).hexdigest()
        if not html_path.is_file():
            problems.append(f"{html_path}: missing (run invoke docs.build)")
        else:
            checked.append(html_path)
            if html_path.read_text(encoding="utf-8") != render_html(md, document_meta(facts, d.doc, d.lang), d.lang):
                problems.append(f"{html_path}: is not the rendering of {md_path.name}")
        if not pdf_path.is_file():
            problems.append(f"{pdf_path}: missing (run invoke docs.build)")
        else:
            checked.append(pdf_path)
            text = re.sub(r"\s+", "", pdf_text(pdf_path))
            if source not in text:
                problems.append(f"{pdf_path}: its text layer does not carry the SHA-256 of {md_path.name} "
                                f"({source}): it was rendered from another text")
        problems += _manifest_problems(out_dir, [md_path, html_path, pdf_path])
    if problems:
        raise PolicyError(f"the CP/CPS under {out_dir / DOCS_DIR} fail {len(problems)} check(s):\n  "
                          + "\n  ".join(problems))
    return checked
