"""The paper script: every shipped ceremony script printed in French and English, read back from the PDF.

Each PDF is rendered once (module fixture) and its text layer read with ``pdftotext`` (poppler), an
independent reader: what it finds is what a printer prints. The task is run as an operator runs it,
``.venv/bin/invoke ceremony.script ...`` in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TESTING_DEFINITION

from ceremony.definition.model import load_definition
from ceremony.transcript import scriptbook
from ceremony.transcript.paper_script import LANGS, TEXT, printed_script_files, render_html, render_pdf, view
from ceremony.transcript.participants import ROLES

SCRIPTS = scriptbook.available()
INVOKE = REPO / ".venv" / "bin" / "invoke"
if not INVOKE.exists():
    INVOKE = Path(sys.executable).parent / "invoke"


# One worker for the module: split across the two xdist workers, each rendered every PDF once more (about 40 s).
pytestmark = pytest.mark.xdist_group("paper-scripts")

def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def definition():
    return load_definition(TESTING_DEFINITION)


@pytest.fixture(scope="module")
def rendered(definition) -> dict[tuple[str, str], dict]:
    """Every script in both languages: HTML, PDF bytes, the PDF's text layer and the render time."""
    import time

    out = {}
    for name in SCRIPTS:
        script = scriptbook.load_script(name)
        for lang in LANGS:
            html = render_html(script, definition, lang)
            start = time.perf_counter()
            pdf = render_pdf(html)
            seconds = time.perf_counter() - start
            text = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True,
                                  check=True).stdout.decode("utf-8")
            out[(name, lang)] = {"script": script, "html": html, "pdf": pdf, "text": _flat(text),
                                 "seconds": seconds}
    return out


def test_scripts_are_found():
    assert "root-key-generation" in SCRIPTS and len(SCRIPTS) >= 6


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", SCRIPTS)
def test_pdf_text_layer_holds_the_script(rendered, definition, name, lang):
    r = rendered[(name, lang)]
    script, text = r["script"], r["text"]
    assert r["pdf"].startswith(b"%PDF-")
    assert script.title[lang] in text
    for step in script.steps:
        assert step.title[lang] in text, f"{name} {lang}: step {step.id} title missing from the PDF"
    m = len(script.acts)
    for n, act in enumerate(script.acts, 1):
        heading = _flat(TEXT[lang]["act"].format(n=n, m=m, title=act.title[lang]))
        assert heading in text, f"{name} {lang}: {heading!r} missing"
    assert not re.search(rf"{TEXT[lang]['act'].split('{n}')[0]}{m + 1}\b", text)  # no act beyond M
    for bag in script.bags:
        assert bag.title[lang] in text
    assert script.sha256 in text
    assert definition.sha256 in text and "inventory/testing/pki.yml" in text and "testing" in text
    assert f"{name}, {TEXT[lang]['version']} {script.version}" in text
    for role in script.roles():
        assert ROLES[role][lang] in text
    assert TEXT[lang]["signatures"] in text and TEXT[lang]["seal_head"] in text
    assert TEXT[lang]["production"] in text and TEXT[lang]["rehearsal"] not in text
    if lang == "fr":  # diacritics are real text, precomposed, not lost or replaced
        for word in ("Émargement d'entrée", "Étape", "Paraphe du témoin", "Tête de chaîne", "Rôle", "N°",
                     "Pièce d'identité", "à l'écran", "soussignés", "Définition de l'ICP"):
            assert word in text, f"{name}: {word!r} missing from the French PDF"
        assert "\ufffd" not in text and "\u0301" not in text
    else:
        assert "Act 1 of" in text and "Witness's initials" in text


def test_one_chain_head_box_per_act_with_64_hex_and_32_word_cells(rendered):
    for (name, lang), r in rendered.items():
        html, script = r["html"], r["script"]
        boxes = html.split('<div class="head">')[1:]
        assert len(boxes) == len(script.acts), (name, lang)
        for box in boxes:
            hex_table = box.split('<table class="hex">')[1].split("</table>")[0]
            words_table = box.split('<table class="words">')[1].split("</table>")[0]
            assert hex_table.count("<tr>") == 2 and hex_table.count("<td") == 64
            assert words_table.count("<td>") == 32
            assert [int(n) for n in re.findall(r'<span class="n">(\d+)</span>', words_table)] == list(range(1, 33))


def test_step_rows_carry_initials_and_time_boxes(rendered):
    r = rendered[("root-key-generation", "en")]
    html = r["html"]
    for step in r["script"].steps:
        row = re.search(rf'<tr class="(un)?witnessed"><td class="num">[\d.]+</td><td>[^<]*<br><span class="id">'
                        rf'{re.escape(step.id)}</span></td>.*?</tr>', html)
        assert row, step.id
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
        assert cells[3] == ("yes" if step.witness else "no")
        assert cells[4:] == ["", "", ""]  # performer's initials, witness's initials, time: left to write in


def test_sign_in_rows_follow_the_roles_and_quorums(definition):
    def people(name: str, rehearsal: bool = False) -> list[str]:
        return view(scriptbook.load_script(name), definition, "en", rehearsal=rehearsal)["people"]

    root = people("root-key-generation")
    assert root.count("Crypto Officer") == definition.model.ceremony.crypto_officer_quorum == 2
    assert root.count("Ceremony Administrator") == root.count("Internal Witness") == 1
    assert root.count("Independent witness or auditor") == 1 and root[-2:] == ["", ""]
    backup = people("key-backup")
    assert backup.count("Key share custodian") == 3  # every named custodian receives a share
    assert "HSM Security Officer" in backup
    sub = people("subordinate-key-generation")
    assert "Independent witness or auditor (if present)" in sub


def test_repeated_steps_are_printed_once_per_round(definition):
    v = view(scriptbook.load_script("root-crl-batch"), definition, "fr")
    signing = next(a for a in v["acts"] if a["id"] == "signing")
    rounds = [g for g in signing["groups"] if g["title"]]
    assert [g["title"] for g in rounds] == [f"Tour {r} sur 4" for r in range(1, 5)]  # crl.batch_count: 4
    assert all([row["id"] for row in g["rows"]] == ["crl-lint", "crl-sign", "crl-verify", "ocsp-sign"] for g in rounds)
    assert "4.2 à 4.5" in signing["note"]


def test_same_inputs_give_the_same_bytes(rendered, definition):
    script = scriptbook.load_script("root-key-generation")
    first = rendered[("root-key-generation", "fr")]
    again = render_html(script, load_definition(TESTING_DEFINITION), "fr")
    assert again.encode() == first["html"].encode()
    assert render_pdf(again) == first["pdf"]  # WeasyPrint takes its metadata from the HTML only: no date
    assert b"/CreationDate" not in first["pdf"] and b"/ModDate" not in first["pdf"]


def test_rehearsal_banner(definition):
    script = scriptbook.load_script("root-key-generation")
    html = render_html(script, definition, "fr", rehearsal=True)
    assert "RÉPÉTITION — cérémonie sans valeur de production" in html
    assert html != render_html(script, definition, "fr")
    text = subprocess.run(["pdftotext", "-", "-"], input=render_pdf(html), capture_output=True,
                          check=True).stdout.decode()
    assert "RÉPÉTITION" in text


def test_render_time_is_reported(rendered, capsys):
    times = [r["seconds"] for r in rendered.values()]
    with capsys.disabled():
        print(f"\npaper script PDF render: {len(times)} PDFs, mean {sum(times) / len(times):.2f} s, "
              f"max {max(times):.2f} s")
    assert max(times) < 30


# the task, as the operator runs it -------------------------------------------------------------------------

def _invoke(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return subprocess.run([str(INVOKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(directory).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_task_writes_files_and_manifest_then_refuses_a_second_run(tmp_path):
    out = tmp_path / "out"
    run = _invoke("ceremony.script", "--env", "testing", "--ceremony", "root-key-generation", "--out", str(out))
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in (out / "scripts").iterdir())
    assert names == sorted(f"root-key-generation.{lang}.{fmt}" for lang in LANGS for fmt in ("pdf", "html"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rehearsal"] is False
    entries = {a["path"]: a for a in manifest["artifacts"]}
    assert set(entries) == {f"scripts/{n}" for n in names}
    for path, a in entries.items():
        assert a["kind"] == "paper-script" and a["ceremony"] == "root-key-generation"
        assert a["format"] == path.rsplit(".", 1)[1] and a["lang"] == path.split(".")[-2]
        assert a["sha256"] == hashlib.sha256((out / path).read_bytes()).hexdigest()
        assert f"{out / path}  sha256 {a['sha256']}" in run.stdout  # shown as written, with its hash
    html = (out / "scripts" / "root-key-generation.fr.html").read_text()
    assert "Cérémonie de production" in html

    found = printed_script_files(out, "root-key-generation")
    assert [(f["path"], f["lang"], f["format"], f["sha256"]) for f in found] == sorted(
        (p, a["lang"], a["format"], a["sha256"]) for p, a in entries.items())

    before = _snapshot(out)
    again = _invoke("ceremony.script", "--env", "testing", "--ceremony", "root-key-generation", "--out", str(out))
    assert again.returncode != 0
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "root-key-generation." in lines[0] and "never overwritten" in lines[0]
    assert "Traceback" not in again.stderr
    assert _snapshot(out) == before  # nothing touched, no temporary file left


def test_task_default_output_directory_is_relative_to_the_working_directory(tmp_path):
    (tmp_path / "inventory").symlink_to(REPO / "inventory")
    run = _invoke("--search-root", str(REPO), "ceremony.script", "--env", "testing", "--ceremony", "key-restore",
                  "--lang", "en", "--rehearsal", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out" / "testing"
    assert sorted(p.name for p in (out / "scripts").iterdir()) == ["key-restore.en.html", "key-restore.en.pdf"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rehearsal"] is True
    assert sorted(a["path"] for a in manifest["artifacts"]) == ["scripts/key-restore.en.html",
                                                                "scripts/key-restore.en.pdf"]
    assert "REHEARSAL — not a production ceremony" in (out / "scripts" / "key-restore.en.html").read_text()


@pytest.mark.parametrize(("args", "expected"), [
    (["--env", "testing", "--ceremony", "no-such-ceremony"], ", ".join(SCRIPTS)),
    (["--env", "testing", "--ceremony", "root-key-generation", "--lang", "de"], "allowed: fr, en, both"),
    (["--ceremony", "root-key-generation"], "--env is required"),
    (["--env", "nowhere", "--ceremony", "root-key-generation"], "testing"),
])
def test_task_bad_input_one_line_nothing_written(tmp_path, args, expected):
    out = tmp_path / "out"
    run = _invoke("ceremony.script", *args, "--out", str(out))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], run.stderr
    assert not out.exists()


def test_printed_script_files_ignores_what_is_not_a_printed_script(tmp_path):
    assert printed_script_files(tmp_path, "root-key-generation") == []
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "root-key-generation.fr.pdf").write_bytes(b"%PDF-1.7 fr")
    (scripts / "root-key-generation.en.html").write_bytes(b"<html>en</html>")
    for other in ("key-backup.fr.pdf", "root-key-generation.de.pdf", "root-key-generation.fr.txt",
                  ".root-key-generation.fr.pdf.abc123.tmp", "root-key-generation.pdf"):
        (scripts / other).write_bytes(b"x")
    (scripts / "root-key-generation.en.pdf").symlink_to(scripts / "root-key-generation.fr.pdf")
    found = printed_script_files(tmp_path, "root-key-generation")
    assert found == [
        {"path": "scripts/root-key-generation.en.html", "lang": "en", "format": "html",
         "sha256": hashlib.sha256(b"<html>en</html>").hexdigest()},
        {"path": "scripts/root-key-generation.fr.pdf", "lang": "fr", "format": "pdf",
         "sha256": hashlib.sha256(b"%PDF-1.7 fr").hexdigest()},
    ]
