"""``helpline package`` on its own (no relay): keygen, build, sign, verify, and their
clear refusals; ``helpline-agent enroll --publisher-key`` with a bad key file."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import BIN, RelayProcess, run_helpline
from .update_helpers import new_publisher

pytestmark = pytest.mark.integration


def test_keygen_build_sign_verify(tmp_path: Path) -> None:
    publisher = new_publisher(tmp_path)
    assert stat.S_IMODE(publisher.key.stat().st_mode) == 0o600
    assert publisher.public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run_helpline(publisher.cli_config, "package", "keygen", str(publisher.key))
    assert again.returncode == 1 and "already exists" in again.stderr

    package = publisher.package(tmp_path, "tool", "1.0.3", "echo hi\n")
    good = run_helpline(
        publisher.cli_config, "package", "verify", str(package), "--pubkey", str(publisher.public)
    )
    assert good.returncode == 0, good.stderr
    assert "name:          tool" in good.stdout
    assert "install:       sh install.sh" in good.stdout
    assert "OK: signed by sha256:" in good.stdout

    other = new_publisher(tmp_path, "other")
    wrong = run_helpline(
        publisher.cli_config, "package", "verify", str(package), "--pubkey", str(other.public)
    )
    assert wrong.returncode == 1
    assert "REFUSED: the package is signed by an unknown key sha256:" in wrong.stderr

    unsigned = publisher.package(tmp_path, "tool", "1.0.4", "echo hi\n", sign=False)
    refused = run_helpline(
        publisher.cli_config, "package", "verify", str(unsigned), "--pubkey", str(publisher.public)
    )
    assert refused.returncode == 1 and "REFUSED: the package is not signed" in refused.stderr

    data = bytearray(package.read_bytes())
    data[-3] ^= 0x40
    package.write_bytes(bytes(data))
    changed = run_helpline(
        publisher.cli_config, "package", "verify", str(package), "--pubkey", str(publisher.public)
    )
    assert changed.returncode == 1 and "SHA-256 does not match" in changed.stderr
    resign = run_helpline(
        publisher.cli_config, "package", "sign", str(package), "--key", str(publisher.key)
    )
    assert resign.returncode == 1 and "rebuild the package" in resign.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "1.0-beta"], "is not dotted numbers"),
        (["--name", "Bad Name"], "package name must be"),
        (["--install", "sh 'unclosed"], "--install: No closing quotation"),
    ],
)
def test_build_refuses_bad_fields(tmp_path: Path, args: list[str], message: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "install.sh").write_text("true\n")
    base = {"--name": "tool", "--version": "1.0", "--install": "sh install.sh"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in base.items() for item in pair]
    out = tmp_path / "out.hlpkg"
    result = run_helpline(tmp_path, "package", "build", str(source), *flat, "-o", str(out))
    assert result.returncode == 1
    assert message in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_enrol_with_a_bad_publisher_key_changes_nothing(
    relay: RelayProcess, tmp_path: Path
) -> None:
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    token = relay.enrolment_token(uses=1)
    config = tmp_path / "agent"
    command = [
        str(BIN / "helpline-agent"),
        "enroll",
        relay.url,
        "--token",
        token,
        "--ca-fingerprint",
        relay.ca_fingerprint,
        "--config",
        str(config),
        "--publisher-key",
        str(not_a_key),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert "not a PEM public key" in result.stderr
    assert not config.exists()
    # the token was not spent: the same command with a real key enrols
    publisher = new_publisher(tmp_path)
    command[-1] = str(publisher.public)
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'publisher_keys = ["publisher-1.pem"]' in (config / "agent.toml").read_text()
    assert (config / "publisher-1.pem").read_bytes() == publisher.public.read_bytes()
