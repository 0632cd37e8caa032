"""relay.toml: the template parses to the defaults; typos and wrong types are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import TEMPLATE, ConfigError, RelayConfig, load_config


def write(directory: Path, text: str) -> Path:
    (directory / "relay.toml").write_text(text)
    return directory


def test_template_gives_the_documented_defaults(tmp_path: Path) -> None:
    text = TEMPLATE.format(listen="127.0.0.1:8443", public_url="https://127.0.0.1:8443",
                           ssh_listen="127.0.0.1:2222")  # fmt: skip
    config = load_config(write(tmp_path, text))
    defaults = RelayConfig(data_dir=tmp_path)
    assert config == defaults
    assert config.store_url == f"sqlite:///{tmp_path / 'relay.db'}"


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'lockout_treshold'"):
        load_config(write(tmp_path, "[auth]\nlockout_treshold = 3\n"))


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[authn\]"):
        load_config(write(tmp_path, "[authn]\nx = 1\n"))


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="totp_required must be bool"):
        load_config(write(tmp_path, "[auth]\ntotp_required = 'yes'\n"))


def test_integers_are_accepted_for_seconds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[agents]\nheartbeat_timeout = 30\n"))
    assert config.agents.heartbeat_timeout == 30.0


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="helpline-relay init"):
        load_config(tmp_path)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"relay\.toml"):
        load_config(write(tmp_path, "[auth\n"))


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[store]\nurl = 'sqlite:////var/lib/helpline/x.db'\n"))
    assert config.store_url == "sqlite:////var/lib/helpline/x.db"
