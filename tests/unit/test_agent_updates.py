"""The agent's update pieces without a relay: installed versions (forward only), the
install runner (exit status, log tail, timeout kills the whole process group), config."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.config import TEMPLATE, ConfigError, load_config
from agent.updates.install import run_install
from agent.updates.service import platform_matches
from agent.updates.state import InstalledVersions, VersionRefused
from certs.packages import PackageError


def test_versions_only_move_forward(tmp_path: Path) -> None:
    installed = InstalledVersions(tmp_path / "updates" / "installed.json")
    installed.check_forward("tool", "1.0", downgrade=False)  # nothing installed yet
    installed.record("tool", "1.2.0", session="s1")
    assert installed.version_of("tool") == "1.2.0"
    assert (tmp_path / "updates" / "installed.json").stat().st_mode & 0o777 == 0o600
    installed.check_forward("tool", "1.2.1", downgrade=False)
    installed.check_forward("other", "0.1", downgrade=False)
    with pytest.raises(VersionRefused, match=r"same as the installed version 1\.2\.0"):
        installed.check_forward("tool", "1.2", downgrade=False)
    with pytest.raises(VersionRefused, match="same as"):
        installed.check_forward("tool", "1.2.0", downgrade=True)  # a downgrade must go down
    with pytest.raises(VersionRefused, match=r"older than the installed version 1\.2\.0"):
        installed.check_forward("tool", "1.1.9", downgrade=False)
    installed.check_forward("tool", "1.1.9", downgrade=True)
    installed.record("tool", "1.1.9")
    assert installed.version_of("tool") == "1.1.9"


def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "installed.json"
    path.write_text("{not json")
    with pytest.raises(PackageError, match=r"cannot read installed\.json"):
        InstalledVersions(path).check_forward("tool", "1.0", downgrade=False)


async def test_install_exit_status_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "install.log"
    script = "for i in $(seq 1 3000); do echo line $i; done; echo oops >&2; exit 7"
    run = await run_install(("sh", "-c", script), tmp_path, dict(os.environ), 30, log)
    assert run.exit_code == 7 and not run.timed_out and not run.error
    assert run.log_tail.endswith("line 3000\noops\n")
    assert len(run.log_tail) <= 4000


async def test_install_past_its_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo started; wait"
    run = await run_install(
        ("sh", "-c", script), tmp_path, dict(os.environ), 1.0, tmp_path / "install.log"
    )
    assert run.timed_out and run.exit_code == -1
    assert "started" in run.log_tail
    child = int(pid_file.read_text())
    for _ in range(100):  # the grandchild was killed with its group
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def test_an_install_command_that_cannot_start(tmp_path: Path) -> None:
    run = await run_install(
        ("/nonexistent/installer",), tmp_path, dict(os.environ), 5, tmp_path / "log"
    )
    assert run.exit_code == -1 and "could not start" in run.error


def test_platforms() -> None:
    assert platform_matches("any")
    assert platform_matches("linux")
    assert platform_matches("linux-x86_64")
    assert not platform_matches("win32")
    assert not platform_matches("darwin")


def _config(tmp_path: Path, keys: str) -> Path:
    text = TEMPLATE.format(url="https://r", device_id="d", name="n", publisher_keys=keys)
    (tmp_path / "agent.toml").write_text(text)
    return tmp_path


def test_config_reads_the_updates_section(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '["publisher-1.pem"]'))
    assert config.publisher_keys == ("publisher-1.pem",)
    assert config.publisher_key_paths() == [tmp_path / "publisher-1.pem"]
    assert config.install_timeout == 600.0
    assert config.health_deadline == 60.0
    assert config.max_package_size == 256 * 1024 * 1024
    assert config.accept_downgrades is True
    assert load_config(_config(tmp_path, "[]")).publisher_keys == ()
    text = (tmp_path / "agent.toml").read_text()
    (tmp_path / "agent.toml").write_text(
        text.replace("accept_downgrades = true", "accept_downgrades = false")
    )
    assert load_config(tmp_path).accept_downgrades is False
    (tmp_path / "agent.toml").write_text(
        text.replace("accept_downgrades = true", 'accept_downgrades = "no"')
    )
    with pytest.raises(ConfigError, match="accept_downgrades must be true or false"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="publisher_keys must be a list"):
        load_config(_config(tmp_path, '"one.pem"'))
    with pytest.raises(ConfigError, match="publisher_keys must be a list"):
        load_config(_config(tmp_path, '[""]'))
