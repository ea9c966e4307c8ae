"""``hf_symbolic._env.env_flag``: the one parser of the HF_SYMBOLIC_* on/off switches."""

import pytest

from hf_symbolic._env import env_flag

NAME = "HF_SYMBOLIC_TEST_SWITCH"


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "No", "off", " off ", "0\n"])
def test_off_values(value, monkeypatch):
    monkeypatch.setenv(NAME, value)
    assert env_flag(NAME) is False
    assert env_flag(NAME, default=False) is False


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "2", "anything"])
def test_on_values(value, monkeypatch):
    monkeypatch.setenv(NAME, value)
    assert env_flag(NAME) is True
    assert env_flag(NAME, default=False) is True


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_or_blank_gives_the_default(value, monkeypatch):
    if value is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, value)
    assert env_flag(NAME) is True
    assert env_flag(NAME, default=False) is False


def test_read_at_every_call(monkeypatch):
    monkeypatch.setenv(NAME, "1")
    assert env_flag(NAME)
    monkeypatch.setenv(NAME, "0")
    assert not env_flag(NAME)
