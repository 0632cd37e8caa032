"""``helpline screen snapshot`` and the screen side of ``helpline recordings export --at``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from PIL import Image

from .clicommon import CliError
from .clicommon import logged_in_client as _client
from .screen import ScreenViewer, render_recording_at


def _waiting_for_consent(state: str, message: str) -> None:
    print(f"helpline: {message or 'waiting for the customer to accept'}...", file=sys.stderr)


def _save(image: Image.Image, file: str) -> None:
    target = Path(file)
    image.save(target, format="PNG")


async def cmd_screen_snapshot(args: argparse.Namespace) -> int:
    """One full frame of a monitor, losslessly, saved as PNG: a ``view`` session."""
    if args.monitor < 0:
        raise CliError("--monitor counts from 0")
    params = {"monitor": str(args.monitor), "mode": "lossless"}
    async with _client() as client, client.connect() as console:
        channel = await console.open_session(
            args.device,
            "view",
            reason=args.reason or "screen snapshot",
            params=params,
            on_status=_waiting_for_consent,
        )
        viewer = ScreenViewer(channel)
        try:
            image = await viewer.full_frame(args.timeout)
            info = viewer.info
            if info is not None and info.monitor != args.monitor:
                raise CliError(
                    f"{args.device} has {len(info.monitors)} monitor(s): no monitor {args.monitor}"
                )
        finally:
            await viewer.close()
    await asyncio.to_thread(_save, image, args.file)
    print(f"wrote {image.size[0]}x{image.size[1]} screen of {args.device} to {args.file}")
    return 0


async def export_screen_at(data: bytes, seconds: float, file: str) -> str:
    """Render a screen recording at ``seconds`` into ``file`` (PNG); a line to print."""
    image = await asyncio.to_thread(render_recording_at, data, seconds)
    await asyncio.to_thread(_save, image, file)
    return f"wrote the screen at {seconds:g}s ({image.size[0]}x{image.size[1]}) to {file}"


def add_screen_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    screen = commands.add_parser("screen", help="see a device's screen")
    screen_commands = screen.add_subparsers(dest="screen_command", required=True)
    snapshot = screen_commands.add_parser(
        "snapshot", help="save one monitor's screen as PNG (a view session: the customer agrees)"
    )
    snapshot.add_argument("device")
    snapshot.add_argument("file", help="where to write the PNG")
    snapshot.add_argument("--monitor", type=int, default=0, help="0 is the first monitor")
    snapshot.add_argument("--reason", help="shown to the customer")
    snapshot.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    snapshot.set_defaults(run=cmd_screen_snapshot)
