"""PIN sources: environment, 0600 file, prompt; never a PIN in a message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ceremony.common.errors import PinError
from ceremony.hsm.pins import PinSource, get_pin, read_pin_file


def test_pin_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_PIN", "s3cret-pin")
    assert get_pin(PinSource(env="X_PIN", interactive=False)) == "s3cret-pin"


def test_pin_file_must_be_0600(tmp_path: Path) -> None:
    f = tmp_path / "pin"
    f.write_text("s3cret-pin\n")
    f.chmod(0o644)
    with pytest.raises(PinError) as info:
        read_pin_file(f)
    assert "0644" in str(info.value) and "0600" in str(info.value) and "s3cret" not in str(info.value)
    f.chmod(0o600)
    assert read_pin_file(f) == "s3cret-pin"


def test_missing_pin_names_the_sources_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_PIN", raising=False)
    with pytest.raises(PinError) as info:
        get_pin(PinSource(env="NOPE_PIN", interactive=False))
    assert "NOPE_PIN" in str(info.value)


def test_empty_pin_file(tmp_path: Path) -> None:
    f = tmp_path / "pin"
    f.write_text("")
    os.chmod(f, 0o600)
    with pytest.raises(PinError, match="empty"):
        read_pin_file(f)
