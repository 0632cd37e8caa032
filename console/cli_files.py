"""``helpline files``: list, push, pull (with progress), mkdir, rm and mv on a device."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import posixpath
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from protocol.errors import NotFound

from .clicommon import CliError
from .clicommon import logged_in_client as _client
from .files import Entry, FilesClient, Result
from .output import as_json, printable, table
from .progress import ProgressBar


def _waiting_for_consent(state: str, message: str) -> None:
    print(f"helpline: {message or 'waiting for the customer to accept'}...", file=sys.stderr)


@contextlib.asynccontextmanager
async def _open_files(args: argparse.Namespace) -> AsyncIterator[FilesClient]:
    """A ``files`` session on ``args.device``, ended on the way out."""
    async with _client() as client, client.connect() as console:
        channel = await console.open_session(
            args.device, "files", reason=args.reason or "", on_status=_waiting_for_consent
        )
        files = FilesClient(channel)
        try:
            yield files
        finally:
            await files.close()


@contextlib.contextmanager
def _local_errors() -> Iterator[None]:
    """A local file problem in one line (main() would call any OSError a network one)."""
    try:
        yield
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise CliError(f"{where}{error.strerror or error}") from error


class _TransferOutput:
    """A progress bar on a terminal (stderr); summary lines on stdout either way."""

    def __init__(self, name: str) -> None:
        self.bar = ProgressBar(name) if sys.stderr.isatty() else None
        self.progress: Callable[[int, int], None] | None = self.bar

    def warn(self, message: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        print(f"helpline: warning: {printable(message)}", file=sys.stderr)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def _file_line(result: Result) -> str:
    """``PATH  SIZE bytes  sha256 HEX  [resumed from N]``: one transferred file."""
    text = f"{printable(result.path)}  {result.size} bytes  sha256 {result.sha256}"
    if result.resumed_from:
        text += f"  resumed from {result.resumed_from}"
    return text


def _summary(verb: str, source: str, result: Result) -> str:
    return f"{verb} {printable(source)} -> {_file_line(result)}"


def _tree_total(results: list[Result]) -> str:
    count = len(results)
    return f"{count} file{'' if count == 1 else 's'}, {sum(r.size for r in results)} bytes"


def _last_name(remote: str) -> str:
    """The last component of a device path, or "" when it has none worth using."""
    name = posixpath.basename(posixpath.normpath(remote))
    return "" if name in ("", ".", "..", "/") else name


async def cmd_files_ls(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        entry = await files.stat(args.path)
        entries = await files.list(args.path) if entry.is_dir else [entry]
    if args.json:
        as_json(
            [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "size": e.size,
                    "mode": e.mode & 0o7777,
                    "mtime_ns": e.mtime_ns,
                }
                for e in entries
            ]
        )
        return 0
    table(
        ("mode", "size", "modified", "name"),
        [
            (
                _file_mode(e),
                e.size,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns / 1e9)),
                e.name + {"dir": "/", "link": "@"}.get(e.kind, ""),
            )
            for e in entries
        ],
    )
    return 0


def _file_mode(entry: Entry) -> str:
    kinds = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}
    text = stat.filemode(kinds.get(entry.kind, 0) | (entry.mode & 0o7777))
    return text if entry.kind in kinds else "?" + text[1:]


async def cmd_files_pull(args: argparse.Namespace) -> int:
    local = Path(args.local)
    name = _last_name(args.remote)
    into_directory: bool = await asyncio.to_thread(local.is_dir)
    if name and into_directory:
        local = local / name  # into an existing directory, as cp and scp do
    output = _TransferOutput(name or args.remote)
    try:
        async with _open_files(args) as files:
            files.on_warning = output.warn
            with _local_errors():
                if args.recursive:
                    results = await files.pull_tree(
                        args.remote,
                        local,
                        output.progress,
                        on_file=lambda r: output.line(_file_line(r)),
                    )
                    output.line(f"pulled {_tree_total(results)} into {local}")
                else:
                    result = await files.pull(args.remote, local, output.progress)
                    output.line(_summary("pulled", args.remote, result))
    finally:
        output.close()
    return 0


async def cmd_files_push(args: argparse.Namespace) -> int:
    local = Path(args.local)
    is_dir = await asyncio.to_thread(local.is_dir)
    if is_dir and not args.recursive:
        raise CliError(f"{local} is a directory (use -r to push a whole tree)")
    name = (await asyncio.to_thread(local.absolute)).name
    output = _TransferOutput(name)
    try:
        async with _open_files(args) as files:
            files.on_warning = output.warn
            remote = args.remote
            with contextlib.suppress(NotFound):
                if (await files.stat(remote)).is_dir:
                    remote = posixpath.join(remote, name)  # into it, as cp and scp do
            with _local_errors():
                if args.recursive:
                    results = await files.push_tree(
                        local,
                        remote,
                        output.progress,
                        on_file=lambda r: output.line(_file_line(r)),
                    )
                    output.line(f"pushed {_tree_total(results)} into {remote}")
                else:
                    result = await files.push(local, remote, output.progress)
                    output.line(_summary("pushed", str(local), result))
    finally:
        output.close()
    return 0


async def cmd_files_mkdir(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.mkdir(args.path, parents=args.parents)
    print(f"created {printable(args.path)}")
    return 0


async def cmd_files_rm(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.remove(args.path, recursive=args.recursive)
    print(f"removed {printable(args.path)}")
    return 0


async def cmd_files_mv(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.rename(args.source, args.target)
    print(f"renamed {printable(args.source)} to {printable(args.target)}")
    return 0
