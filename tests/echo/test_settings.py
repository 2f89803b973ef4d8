"""ECHO_CANCELLATION: its default, and a bad value stops startup naming the setting."""

from __future__ import annotations

import pytest

from speakflow.config import load_settings
from speakflow.errors import ConfigError


def test_default_is_auto() -> None:
    assert load_settings(environ={}, env_file=None).ECHO_CANCELLATION == "auto"


@pytest.mark.parametrize("value", ["off", "auto", "on"])
def test_each_mode_is_accepted(value: str) -> None:
    settings = load_settings(environ={"ECHO_CANCELLATION": value}, env_file=None)
    assert value == settings.ECHO_CANCELLATION


def test_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ECHO_CANCELLATION": "speakers"}, env_file=None)
    assert "ECHO_CANCELLATION" in str(err.value)
