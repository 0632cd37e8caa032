"""``helpline audit``: list entries, verify the chain as a witness, export copies.

``verify`` recomputes the chain here (the relay's word is not taken for it) and checks
that it extends the head this CLI verified last for the same relay
(:mod:`console.witness`); ``--accept-new-head`` re-anchors deliberately. ``export``
writes JSON lines (a header naming the relay and its head, then the entries) that
``verify --export FILE`` checks on its own, and ``verify --against FILE`` checks the live
chain against.

Exit status: 0 intact, 3 the chain itself is broken (or a recording differs), 4 the chain
is intact but does not extend what was witnessed (rewritten), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from certs.fingerprints import fingerprint
from protocol.auditchain import verify_chain

from .clicommon import CliError, logged_in_client
from .credentials import load_credentials
from .output import as_json, printable, table
from .witness import (
    Witnessed,
    check_extends,
    export_header,
    load_witnessed,
    save_witnessed,
    verify_export,
)

EXIT_BROKEN = 3
EXIT_REWRITTEN = 4


def _relay_identity() -> tuple[str, str]:
    """The logged-in relay's URL and its pinned CA's fingerprint (the witness's key)."""
    credentials = load_credentials()
    if credentials is None:
        raise CliError("not logged in; run 'helpline login URL --user NAME'")
    ca = x509.load_pem_x509_certificate(credentials.ca_pem.encode())
    return credentials.url, fingerprint(ca)


async def cmd_audit_list(args: argparse.Namespace) -> int:
    async with logged_in_client() as client:
        page = await client.audit(
            after=args.after,
            limit=args.limit,
            actor=args.actor,
            action=args.action,
            target=args.target,
        )
    entries = page["entries"]
    if args.json:
        as_json(entries)
        return 0
    table(
        ("seq", "time", "actor", "action", "target", "details"),
        [
            (
                e["seq"],
                e["ts"][:19].replace("T", " "),
                e["actor"],
                e["action"],
                e["target"],
                " ".join(f"{k}={printable(v)}" for k, v in sorted(e["details"].items())),
            )
            for e in entries
        ],
    )
    return 0


def _loud(lines: list[str]) -> None:
    bar = "!" * 78
    print(bar, file=sys.stderr)
    for line in lines:
        print(f"!! {line}", file=sys.stderr)
    print(bar, file=sys.stderr)


def _against(entries: list[dict[str, Any]], path: str) -> str | None:
    """Why the live chain does not contain the exported copy at ``path``, or None."""
    with Path(path).open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    _, report = verify_export(lines)
    if not report.ok:
        raise CliError(
            f"{path}: the copy itself is broken at entry {report.bad_seq}: {report.reason}"
        )
    by_seq = {int(e["seq"]): str(e["hash"]) for e in entries}
    for line in lines[1:]:
        if not line.strip():
            continue
        kept = json.loads(line)
        live = by_seq.get(int(kept["seq"]))
        if live is None:
            return f"entry {kept['seq']} of the copy in {path} is no longer in the chain"
        if not hmac.compare_digest(live, str(kept["hash"])):
            return f"entry {kept['seq']} differs from the copy in {path}"
    return None


async def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.export:
        return await asyncio.to_thread(_verify_export_file, args.export)
    url, ca_fingerprint = _relay_identity()
    async with logged_in_client() as client:
        entries, head = await client.audit_all()
        report = verify_chain(entries, head=head)
        problems = (
            []
            if args.skip_recordings or not report.ok
            else (await client.verify_recordings(entries))
        )
    if not report.ok:
        print(f"audit chain BROKEN at entry {report.bad_seq}: {report.reason}", file=sys.stderr)
        print(f"({report.checked} entries before it verified)", file=sys.stderr)
        return EXIT_BROKEN
    witnessed = load_witnessed(ca_fingerprint)
    rewritten = None if witnessed is None else check_extends(entries, witnessed)
    if rewritten is None and args.against:
        rewritten = _against(entries, args.against)
    if rewritten is not None and not args.accept_new_head:
        _loud(
            [
                "AUDIT LOG REWRITTEN: the chain links up, but it does not extend what was",
                "verified before.",
                rewritten,
                f"relay {url} (CA {ca_fingerprint})",
                "Someone who can write the relay's data directory may have replaced the log.",
                "If you know why (the data was restored from a backup), keep a copy first",
                "('helpline audit export'), then re-anchor:",
                "  helpline audit verify --accept-new-head",
            ]
        )
        return EXIT_REWRITTEN
    if entries:
        last = entries[-1]
        save_witnessed(
            Witnessed(url, ca_fingerprint, int(last["seq"]), str(last["hash"]), time.time())
        )
    if rewritten is not None:
        print(f"re-anchored on request: {rewritten}", file=sys.stderr)
    if problems:
        for seq, session_id, problem in problems:
            print(f"entry {seq}: session {session_id}: {problem}", file=sys.stderr)
        return EXIT_BROKEN
    sealed = sum(1 for e in entries if e.get("details", {}).get("recording_sha256"))
    checked = "not checked" if args.skip_recordings else f"{sealed} verified"
    since = (
        "first check of this relay"
        if witnessed is None
        else f"extends entry {witnessed.seq} verified before"
    )
    print(
        f"audit chain intact: {report.checked} entries verified; recordings: {checked};"
        f" witness: {since}"
    )
    return 0


def _verify_export_file(path: str) -> int:
    with Path(path).open(encoding="utf-8") as handle:
        try:
            header, report = verify_export(handle)
        except ValueError as error:
            raise CliError(f"{path}: {error}") from None
    if not report.ok:
        print(f"exported audit chain BROKEN at entry {report.bad_seq}: {report.reason}",
              file=sys.stderr)  # fmt: skip
        return EXIT_BROKEN
    print(
        f"exported audit chain intact: {report.checked} entries from entry {header.get('from')}"
        f" of {header.get('relay')}"
    )
    return 0


async def cmd_audit_export(args: argparse.Namespace) -> int:
    url, ca_fingerprint = _relay_identity()
    first = max(1, args.from_seq)
    async with logged_in_client() as client:
        entries: list[dict[str, Any]] = []
        after = first - 1
        head = None
        while True:
            page = await client.audit(after=after, limit=5000)
            head = page["head"]
            if not page["entries"]:
                break
            entries.extend(page["entries"])
            after = page["entries"][-1]["seq"]
    head_pair = None if head is None else (int(head["seq"]), str(head["hash"]))
    lines = [export_header(url, ca_fingerprint, head_pair, first)]
    lines.extend(json.dumps(e, sort_keys=True, ensure_ascii=False) for e in entries)
    text = "\n".join(lines) + "\n"
    if args.output in (None, "-"):
        out: TextIO = sys.stdout
        out.write(text)
    else:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        print(f"wrote {len(entries)} entries from entry {first} to {args.output}", file=sys.stderr)
    return 0


def add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_list = audit_commands.add_parser("list", help="show entries")
    audit_list.add_argument("--json", action="store_true")
    audit_list.add_argument("--after", type=int, default=0, help="entries after this seq")
    audit_list.add_argument("--limit", type=int, default=100)
    audit_list.add_argument("--actor")
    audit_list.add_argument("--action")
    audit_list.add_argument("--target")
    audit_list.set_defaults(run=cmd_audit_list)
    verify = audit_commands.add_parser(
        "verify",
        help="recompute the hash chain and recordings; fail (4) if it does not extend the"
        " head verified last",
    )
    verify.add_argument("--skip-recordings", action="store_true")
    verify.add_argument(
        "--accept-new-head",
        action="store_true",
        help="re-anchor the witness on this chain even if it does not extend the last one",
    )
    verify.add_argument(
        "--against", metavar="FILE", help="also check the chain against an exported copy"
    )
    verify.add_argument(
        "--export", metavar="FILE", help="verify an exported copy on its own (no relay)"
    )
    verify.set_defaults(run=cmd_audit_verify)
    export = audit_commands.add_parser(
        "export", help="JSON lines (a header with the head, then the entries) to keep elsewhere"
    )
    export.add_argument("--from", dest="from_seq", type=int, default=1, metavar="SEQ")
    export.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    export.set_defaults(run=cmd_audit_export)
