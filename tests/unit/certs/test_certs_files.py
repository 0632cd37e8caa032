"""Secret files born 0600 and never overwritten; public files 0644 and replaced atomically."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from certs import write_public, write_secret


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Umask 0: the modes must come from the code, not from a kind default."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_write_secret_creates_a_0600_file(tmp_path) -> None:
    path = tmp_path / "agent.key"
    write_secret(path, b"secret bytes")
    assert path.read_bytes() == b"secret bytes"
    assert mode(path) == 0o600


def test_write_secret_passes_mode_0600_to_open_itself(tmp_path, monkeypatch) -> None:
    """No window: the file is created 0600 with O_EXCL, not chmod-ed afterwards."""
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    write_secret(tmp_path / "k", b"x")
    flags, created_mode = calls[0]
    assert created_mode == 0o600
    assert flags & os.O_CREAT
    assert flags & os.O_EXCL
    assert flags & os.O_WRONLY


def test_write_secret_refuses_to_overwrite(tmp_path) -> None:
    path = tmp_path / "ca.key"
    write_secret(path, b"original")
    with pytest.raises(FileExistsError):
        write_secret(path, b"replacement")
    assert path.read_bytes() == b"original"


def test_write_secret_refuses_a_planted_symlink(tmp_path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "agent.key"
    link.symlink_to(target)  # dangling: O_CREAT alone would follow it and create target
    with pytest.raises(FileExistsError):
        write_secret(link, b"secret")
    assert not target.exists()


def test_write_secret_removes_a_partial_file_on_failure(tmp_path, monkeypatch) -> None:
    path = tmp_path / "agent.key"

    def broken_write(fd, data):
        raise OSError("disk full")

    monkeypatch.setattr(os, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_secret(path, b"secret")
    monkeypatch.undo()
    assert not path.exists()
    write_secret(path, b"secret")  # a retry works
    assert path.read_bytes() == b"secret"


def test_write_secret_writes_large_data_completely(tmp_path) -> None:
    data = os.urandom(1 << 20)
    write_secret(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


@pytest.mark.usefixtures("permissive_umask")
def test_write_public_creates_0644_and_overwrites(tmp_path) -> None:
    path = tmp_path / "ca.pem"
    write_public(path, b"first")
    assert path.read_bytes() == b"first"
    assert mode(path) == 0o644
    write_public(path, b"second")
    assert path.read_bytes() == b"second"
    assert mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]  # no temp file left


def test_write_public_is_atomic_and_cleans_up_on_failure(tmp_path, monkeypatch) -> None:
    path = tmp_path / "server.pem"
    write_public(path, b"old")

    def broken_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_public(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.pem"]


def test_write_public_replaces_a_symlink_not_its_target(tmp_path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"untouched")
    link = tmp_path / "ca.pem"
    link.symlink_to(target)
    write_public(link, b"cert")
    assert not link.is_symlink()
    assert link.read_bytes() == b"cert"
    assert target.read_bytes() == b"untouched"
