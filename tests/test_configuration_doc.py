"""docs/configuration.md lists every setting as models/settings.py defines it."""

from pathlib import Path

from scripts.config_doc import render


def test_configuration_doc_is_generated_from_the_current_settings() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == render(), "run: .venv/bin/python scripts/config_doc.py"


def test_a_wrong_setting_fails_with_the_variables_name(monkeypatch) -> None:
    import pytest
    from pydantic import ValidationError

    from models.settings import Settings

    monkeypatch.setenv("IOT_MQTT_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="mqtt_port"):
        Settings()
