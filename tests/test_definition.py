"""Definition validation: the shipped definitions load; each bad input gets one precise message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, base_definition_data, write_definition

from ceremony.common.errors import DefinitionError
from ceremony.definition.model import load_definition, parse_duration


def test_shipped_definitions_are_valid() -> None:
    testing = load_definition(REPO / "inventory/testing/pki.yml").model
    prod = load_definition(REPO / "inventory/production.example/pki.yml").model
    assert testing.root_name == "root" and testing.cas["qualified"].issuer == "root"
    root = prod.cas[prod.root_name]
    assert (root.key.algorithm, root.key.curve) == ("ecdsa", "P-384")
    assert (root.validity.not_before.year, root.validity.not_after.year) == (2026, 2046)
    assert prod.organisation.country == "ML"
    assert prod.cas["qualified"].key.curve == "P-384" and prod.cas["qualified"].profiles


def _error(tmp_path: Path, mutate: Any = None, text: str | None = None) -> DefinitionError:
    path = tmp_path / "pki.yml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    else:
        data = copy.deepcopy(base_definition_data())
        mutate(data)
        write_definition(path, data)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert str(path) in str(info.value), "the message names the file"
    return info.value


def test_malformed_yaml(tmp_path: Path) -> None:
    err = _error(tmp_path, text="version: 1\ncas: [unclosed\n")
    assert "malformed YAML" in str(err) and err.exit_code == 2


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, text="version: 1\nversion: 1\n")
    assert "version" in str(err)


def test_unknown_key(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"].update(colour="blue"))
    assert "cas.root.colour" in str(err) and "did you mean" not in str(err)
    assert err.allowed is not None and "key_label" not in err.allowed and "validity, " in err.allowed


def test_misspelt_key_is_reported_as_unknown_with_a_suggestion(tmp_path: Path) -> None:
    """``key_labl`` for ``key_label``: the unknown key is the cause, not the key it makes missing."""
    def mutate(d: dict[str, Any]) -> None:
        hsm = d["cas"]["qualified"]["hsm"]
        hsm["key_labl"] = hsm.pop("key_label")
    err = _error(tmp_path, mutate)
    assert err.path == "cas.qualified.hsm.key_labl" and "missing" not in str(err)
    assert err.problem == "unknown key 'key_labl'; did you mean 'key_label'?"
    assert err.allowed == "module, token, key_label, seal_label, pin_env, so_pin_env, split_user_pin, module_config"
    lines = (tmp_path / "pki.yml").read_text(encoding="utf-8").splitlines()
    assert lines[err.line - 1].strip().startswith("key_labl:"), "the line is the misspelt key's"
    assert str(err).startswith(f"{tmp_path / 'pki.yml'}:{err.line}: cas.qualified.hsm.key_labl: unknown key")


@pytest.mark.parametrize(("mutate", "path", "guess", "allowed"), [
    (lambda d: d.update(organisaton=d.pop("organisation")), "organisaton", "organisation", "version, environment"),
    (lambda d: d["cas"]["root"]["key"].update(curv="P-384"), "cas.root.key.curv", "curve", "algorithm, curve"),
    (lambda d: d["cas"]["root"]["hsm"]["token"].update(lable="x"), "cas.root.hsm.token.lable", "label",
     "label, serial, uri"),
    (lambda d: d["documents"]["history"][0].update(dat="2026-01-01"), "documents.history.0.dat", "date",
     "date, version"),
    (lambda d: d["cas"]["qualified"]["profiles"]["qes-natural-person"].update(validty_days=3),
     "cas.qualified.profiles.qes-natural-person.validty_days", "validity_days", "kind, validity_days"),
])
def test_unknown_key_anywhere_lists_the_allowed_keys(tmp_path: Path, mutate: Any, path: str, guess: str,
                                                     allowed: str) -> None:
    err = _error(tmp_path, mutate)
    assert err.path == path and f"did you mean {guess!r}?" in err.problem
    assert err.allowed is not None and err.allowed.startswith(allowed) and err.line


@pytest.mark.parametrize(("uri", "needle"), [
    ("pkcs11:modle=HSM;token=root", "unknown PKCS#11 URI attribute 'modle' (did you mean 'model'?)"),
    ("pkcs11:token=root;object=scse-root", "'object' selects a key, not a token"),
    ("pkcs11:token=root?pin-value=123456", "must not carry pin-value"),
    ("token=root", "starts with 'pkcs11:'"),
])
def test_token_uri_is_checked_with_the_definition(tmp_path: Path, uri: str, needle: str) -> None:
    """Before any HSM: an attribute the token matching would ignore is refused at load, with its line."""
    err = _error(tmp_path, lambda d: d["cas"]["root"]["hsm"].update(token={"uri": uri}))
    assert err.path == "cas.root.hsm.token" and needle in err.problem and err.line
    assert "123456" not in str(err), "a PIN never appears in a message"


def test_not_after_before_not_before(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["cas"]["root"]["validity"]["not_after"] = "2020-01-01T00:00:00Z"
    err = _error(tmp_path, mutate)
    assert "cas.root.validity" in str(err) and "not_after must be later than not_before" in str(err)


def test_rsa_2048_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"].update(key={"algorithm": "rsa", "bits": 2048}))
    assert "cas.root.key" in str(err) and "3072" in str(err) and "4096" in str(err)


def test_unknown_curve_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"].update(key={"algorithm": "ecdsa", "curve": "P-192"}))
    assert "cas.root.key" in str(err) and "P-384" in str(err)


def test_root_beyond_25_years(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"]["validity"].update(not_after="2052-01-01T00:00:00Z"))
    assert "cas.root.validity" in str(err) and "at most 25 years" in str(err)


def test_caps_can_be_lowered_not_raised(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["limits"].update(root_max_years=30))
    assert "limits.root_max_years" in str(err)
    err = _error(tmp_path, lambda d: d["limits"].update(subordinate_max_years=5))
    assert "cas.qualified.validity" in str(err) and "at most 5 years" in str(err)


def test_subordinate_outliving_its_root(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["cas"]["root"]["validity"]["not_after"] = "2030-01-01T00:00:00Z"
    err = _error(tmp_path, mutate)
    assert "cas.qualified.validity.not_after" in str(err) and "outlives" in str(err)


def test_wrong_type(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["qualified"].update(path_length="zero"))
    assert "cas.qualified.path_length" in str(err)


def test_https_crl_url_is_refused(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"]["publication"].update(crl_url="https://x.ml/r.crl"))
    assert "cas.root.publication.crl_url" in str(err) and "http://" in str(err)


def test_pin_in_definition_is_impossible(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"]["hsm"].update(pin="123456"))
    assert "cas.root.hsm.pin" in str(err)
    assert "123456" not in str(err), "a PIN never appears in a message"


def test_crl_cadence_checked_against_the_baseline_requirements(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["qualified"]["crl"].update(lifetime="11d"))
    assert "cas.qualified.crl.lifetime" in str(err) and "10d" in str(err)


def test_line_number_is_reported(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda d: d["cas"]["root"].update(key={"algorithm": "rsa", "bits": 2048}))
    assert ":" in str(err).split(" ")[0] and err.line is not None


def test_durations() -> None:
    assert parse_duration("7d").days == 7 and parse_duration("24h").total_seconds() == 86400
    with pytest.raises(ValueError):
        parse_duration("1w")


def test_an_unknown_ca_asked_for_after_loading_names_the_operators_file(tmp_path: Path) -> None:
    """A CA name from the command line is checked after the file loaded: the refusal still names that file."""
    path = tmp_path / "envs" / "pki.yml"
    path.parent.mkdir()
    write_definition(path, copy.deepcopy(base_definition_data()))
    model = load_definition(path).model
    with pytest.raises(DefinitionError) as info:
        model.ca("qualifed")
    assert str(path) in str(info.value) and "no CA named 'qualifed'" in str(info.value)
