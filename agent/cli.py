"""``helpline-agent``: enrol this machine with a relay, then run the agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from protocol.errors import HelplineError

from .config import ConfigError, load_config


async def _run(config_dir: Path) -> None:
    from .control import serve_control
    from .runner import AgentRunner

    runner = AgentRunner(load_config(config_dir))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    control = await serve_control(runner.sessions, config_dir)
    try:
        await runner.run_forever(stop)
    finally:
        control.close()


def _sessions(config_dir: Path, action: str, session: str | None) -> int:
    from .control import control_request

    if action == "end":
        answer = control_request(config_dir, {"command": "end", "session": session})
        if not answer.get("ok"):
            print(f"helpline-agent: {answer.get('error', 'failed')}", file=sys.stderr)
            return 1
        print(f"ended session {session}")
        return 0
    answer = control_request(config_dir, {"command": "list"})
    for item in answer.get("sessions", []):
        print(f"{item['session']}  {item['kind']:6}  {item['technician']}  {item['reason']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helpline-agent", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="enrol this machine with a relay")
    enroll.add_argument("url", help="the relay, e.g. https://relay.example.com:8443")
    enroll.add_argument("--token", required=True, help="enrolment token from an admin")
    enroll.add_argument("--ca-fingerprint", required=True, help="sha256:HEX of the relay CA")
    enroll.add_argument("--config", type=Path, required=True, help="directory for agent files")
    enroll.add_argument("--name", help="device name (default: the hostname)")
    enroll.add_argument(
        "--publisher-key",
        type=Path,
        action="append",
        default=[],
        help="a publisher's Ed25519 public key (PEM) whose signed packages this agent installs"
        " (repeatable)",
    )

    run = commands.add_parser("run", help="connect to the relay and serve sessions")
    run.add_argument("--config", type=Path, required=True)

    supervise = commands.add_parser(
        "supervise",
        help="run the agent under a supervisor that applies agent updates and rolls back"
        " a version that does not come back healthy",
    )
    supervise.add_argument("--config", type=Path, required=True)

    sessions = commands.add_parser(
        "sessions", help="sessions on this machine (the customer's view)"
    )
    sessions.add_argument("action", choices=("list", "end"))
    sessions.add_argument("session", nargs="?", help="the session to end")
    sessions.add_argument("--config", type=Path, required=True)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        if args.command == "enroll":
            from .enrol import enroll as do_enroll

            config = do_enroll(
                args.url,
                args.token,
                args.ca_fingerprint,
                args.config,
                args.name,
                args.publisher_key,
            )
            print(f"enrolled as {config.name} (device {config.device_id}); run:")
            print(f"  helpline-agent run --config {args.config}")
            return 0
        if args.command == "sessions":
            if args.action == "end" and not args.session:
                parser.error("sessions end needs a session id")
            return _sessions(args.config, args.action, args.session)
        if args.command == "supervise":
            from .updates.supervisor import Supervisor

            return Supervisor(load_config(args.config), verbose=args.verbose).run()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run(args.config))
        return 0
    except (HelplineError, ConfigError, ValueError, OSError) as exc:
        print(f"helpline-agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
