"""Update push benchmark: one signed package to a group of real agents.

A relay and ``BENCH_UPDATE_AGENTS`` (default 5) real ``helpline-agent`` processes on
loopback, enrolled with the publisher key; a package whose payload is
``BENCH_UPDATE_MB`` MiB of random bytes (incompressible) and whose install command is
``true``. The package is uploaded and rolled out twice (a newer version the second time:
versions only move forward): to every device at once, then one batch per device.

The table: upload time, rollout time (push to the last result: transfer, signature and
hash check and unpacking on every agent), aggregate throughput (package bytes delivered
per second of rollout), and the relay's peak resident memory while it ran (sampled every
0.1 s). Nothing is asserted: these are measurements.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from console.client import HelplineClient
from tests.integration.conftest import AgentProcess, init_relay, run_helpline, totp_now
from tests.integration.update_helpers import Publisher, enroll_with_key, new_publisher

AGENTS = int(os.environ.get("BENCH_UPDATE_AGENTS", "5"))
SIZE_MB = int(os.environ.get("BENCH_UPDATE_MB", "64"))
GROUP = "bench-updates"


def _package(publisher: Publisher, directory: Path, version: str) -> Path:
    source = directory / f"payload-{version}"
    source.mkdir()
    (source / "install.sh").write_text("true\n")
    with open(source / "blob.bin", "wb") as blob:
        for _ in range(SIZE_MB):
            blob.write(os.urandom(1024 * 1024))
    out = directory / f"bench-blob-{version}.hlpkg"
    build = run_helpline(
        publisher.cli_config,
        "package",
        "build",
        str(source),
        "--name",
        "bench-blob",
        "--version",
        version,
        "--install",
        "sh install.sh",
        "-o",
        str(out),
    )
    sign = run_helpline(
        publisher.cli_config, "package", "sign", str(out), "--key", str(publisher.key)
    )
    if build.returncode or sign.returncode:
        raise RuntimeError(build.stderr + sign.stderr)
    return out


async def _run(directory: Path) -> list[tuple[str, ...]]:
    relay = init_relay(directory)
    relay.start()
    agents: list[AgentProcess] = []
    try:
        assert relay.process is not None
        relay_process = psutil.Process(relay.process.pid)
        async with HelplineClient(relay.url, relay.ca_pem) as client:
            admin = relay.admin
            await client.login(admin["username"], admin["password"], totp_now(admin["totp_secret"]))
            await client.create_group(GROUP)
            publisher = new_publisher(directory)
            token = relay.enrolment_token(GROUP, uses=AGENTS)
            for number in range(AGENTS):
                agent = enroll_with_key(relay, directory, f"upd-{number}", publisher, token=token)
                agent.start()
                agents.append(agent)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                online = [d for d in await client.devices() if d["online"]]
                if len(online) >= AGENTS:
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("the agents did not come online")
            print(f"{AGENTS} agents online; building {SIZE_MB} MiB packages", file=sys.stderr)
            packages = [_package(publisher, directory, v) for v in ("1.0", "2.0")]
            rows = []
            for (label, batch), package in zip(
                (("all at once", AGENTS), ("one at a time", 1)), packages, strict=True
            ):
                size = package.stat().st_size
                started = time.monotonic()
                uploaded = await client.upload("/api/v1/updates/packages", package)
                upload_seconds = time.monotonic() - started
                peak = relay_process.memory_info().rss
                started = time.monotonic()
                body = await client.request(
                    "POST",
                    "/api/v1/updates/rollouts",
                    json={"package": uploaded["sha256"], "group": GROUP, "batch": batch},
                )
                while body["state"] == "running":
                    await asyncio.sleep(0.1)
                    peak = max(peak, relay_process.memory_info().rss)
                    body = await client.request("GET", f"/api/v1/updates/rollouts/{body['id']}")
                seconds = time.monotonic() - started
                succeeded = body["counts"].get("succeeded", 0)
                rows.append(
                    (
                        label,
                        str(AGENTS),
                        f"{size / 2**20:.1f}",
                        f"{upload_seconds:.2f}",
                        f"{seconds:.2f}",
                        f"{succeeded * size / 2**20 / seconds:.1f}",
                        f"{peak / 2**20:.1f}",
                        f"{succeeded}/{AGENTS}",
                    )
                )
            return rows
    finally:
        for agent in agents:
            agent.stop()
        relay.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="helpline-bench-updates-") as directory:
        rows = asyncio.run(_run(Path(directory)))
    headers = (
        "rollout",
        "agents",
        "package MiB",
        "upload s",
        "rollout s",
        "MiB/s delivered",
        "relay peak RSS MiB",
        "succeeded",
    )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0 if all(r[-1] == f"{AGENTS}/{AGENTS}" for r in rows) else 1
