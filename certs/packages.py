"""Signed software packages: the one file format the console builds, the relay routes and
the agent verifies.

It lives in ``certs/`` because it is key material and signatures (Ed25519 through
``cryptography``) that the console, the relay and the agent all need, and ``certs`` is
the one package all three may import (``protocol`` may not use ``cryptography``).

A package file is::

    MAGIC (8 bytes) | u32 length | manifest | u32 length | signature block | payload

* the **manifest** is canonical JSON (sorted keys, no spaces, UTF-8): name, version,
  kind (``software`` or ``agent``), platform, install command (an argv list), payload
  SHA-256 and size, creation time, format number. Only the canonical form is accepted,
  so one manifest has exactly one byte string, and that is what is signed;
* the **signature block** is empty (a built, unsigned package) or JSON naming the
  publisher key (``sha256:`` of its raw public bytes) and the Ed25519 signature over
  the manifest bytes;
* the **payload** (a gzipped tar of the package directory) runs to the end of the file,
  exactly ``payload_size`` bytes.

:func:`verify_package` is what an agent runs: the signature must come from one of the
keys it pins, then the payload must hash to the manifest's SHA-256. Nothing else in the
file is trusted. The relay may read a manifest with :func:`read_header` to show and route
a package, but it holds no key an agent trusts, so it cannot make one acceptable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT",
    "KINDS",
    "MAGIC",
    "BadSignature",
    "MalformedPackage",
    "Manifest",
    "PackageError",
    "PackageHeader",
    "PayloadMismatch",
    "PublisherKeys",
    "UnknownPublisher",
    "UnsignedPackage",
    "build_package",
    "compare_versions",
    "generate_publisher_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_version",
    "private_key_pem",
    "public_key_pem",
    "read_header",
    "sign_package",
    "verify_package",
]

MAGIC = b"HLPKG\x00\x01\n"
FORMAT = 1
KINDS = frozenset({"software", "agent"})
MAX_MANIFEST = 64 * 1024
MAX_SIGNATURE_BLOCK = 1024
MAX_PAYLOAD = 2**40
MAX_INSTALL_ARGS = 64
MAX_ARG_LENGTH = 1024
_CHUNK = 1024 * 1024

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$")
PLATFORM_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
KEY_ID_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_LENGTH = struct.Struct(">I")


class PackageError(ValueError):
    """A package that cannot be used; the message says why, in one line."""


class MalformedPackage(PackageError):
    pass


class UnsignedPackage(PackageError):
    pass


class UnknownPublisher(PackageError):
    pass


class BadSignature(PackageError):
    pass


class PayloadMismatch(PackageError):
    pass


# -- versions ------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.2.10"`` -> ``(1, 2, 10)``; dotted numbers only, up to four of them."""
    if not VERSION_PATTERN.match(text):
        raise PackageError(f"version {text[:32]!r} is not dotted numbers like 1.2.3")
    return tuple(int(part) for part in text.split("."))


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` is older than, equal to or newer than ``right`` (1.2 == 1.2.0)."""
    a, b = list(parse_version(left)), list(parse_version(right))
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


# -- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    kind: str
    platform: str
    install: tuple[str, ...]
    payload_sha256: str
    payload_size: int
    created: int

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise MalformedPackage(
                "package name must be 1-64 of a-z 0-9 . _ + - (starting with a letter or digit)"
            )
        parse_version(self.version)
        if self.kind not in KINDS:
            raise MalformedPackage(f"package kind must be one of {', '.join(sorted(KINDS))}")
        if not PLATFORM_PATTERN.match(self.platform):
            raise MalformedPackage("platform must be 1-32 of a-z 0-9 _ - (e.g. linux, any)")
        if not self.install or len(self.install) > MAX_INSTALL_ARGS:
            raise MalformedPackage(f"the install command needs 1 to {MAX_INSTALL_ARGS} arguments")
        for argument in self.install:
            if not isinstance(argument, str) or len(argument) > MAX_ARG_LENGTH:
                raise MalformedPackage(f"install arguments are strings of <= {MAX_ARG_LENGTH}")
            if "\0" in argument:
                raise MalformedPackage("install arguments cannot hold NUL characters")
        if not SHA256_PATTERN.match(self.payload_sha256):
            raise MalformedPackage("payload_sha256 must be 64 lowercase hex digits")
        if not 0 <= self.payload_size <= MAX_PAYLOAD:
            raise MalformedPackage("payload_size out of range")
        if not 0 <= self.created < 2**40:
            raise MalformedPackage("created out of range")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "platform": self.platform,
            "install": list(self.install),
            "payload_sha256": self.payload_sha256,
            "payload_size": self.payload_size,
            "created": self.created,
        }

    def canonical_bytes(self) -> bytes:
        return _canonical(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedPackage("the manifest is not JSON") from None
        if not isinstance(raw, dict):
            raise MalformedPackage("the manifest is not a JSON object")
        if raw.get("format") != FORMAT:
            raise MalformedPackage(f"unknown package format {str(raw.get('format'))[:16]!r}")
        expected = {
            "format",
            "name",
            "version",
            "kind",
            "platform",
            "install",
            "payload_sha256",
            "payload_size",
            "created",
        }
        if set(raw) != expected:
            raise MalformedPackage("the manifest has missing or unknown fields")
        texts = ("name", "version", "kind", "platform", "payload_sha256")
        if not all(isinstance(raw[k], str) for k in texts):
            raise MalformedPackage("manifest text fields must be strings")
        numbers = ("payload_size", "created")
        if not all(isinstance(raw[k], int) and not isinstance(raw[k], bool) for k in numbers):
            raise MalformedPackage("manifest sizes and times must be integers")
        if not isinstance(raw["install"], list):
            raise MalformedPackage("the install command must be a list")
        manifest = cls(
            name=raw["name"],
            version=raw["version"],
            kind=raw["kind"],
            platform=raw["platform"],
            install=tuple(raw["install"]),
            payload_sha256=raw["payload_sha256"],
            payload_size=raw["payload_size"],
            created=raw["created"],
        )
        if manifest.canonical_bytes() != data:
            raise MalformedPackage("the manifest is not in canonical form")
        return manifest


def _canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys ------------------------------------------------------------------------------------


def generate_publisher_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PackageError("not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError("the publisher key must be an Ed25519 key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise PackageError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError("the publisher key must be an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """``sha256:HEX`` of the raw 32-byte public key: how packages name their signer."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class PublisherKeys:
    """The publisher keys one party trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self.by_id: dict[str, Ed25519PublicKey] = {key_id(k): k for k in keys}

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path]) -> PublisherKeys:
        return cls(load_public_key(Path(p).read_bytes()) for p in paths)

    def __len__(self) -> int:
        return len(self.by_id)


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageHeader:
    manifest: Manifest
    manifest_bytes: bytes
    signer: str | None  # key id, None when unsigned
    signature: bytes | None
    payload_offset: int


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise MalformedPackage(f"the package ends inside its {what}")
    return data


def _read_block(stream: BinaryIO, limit: int, what: str) -> bytes:
    (length,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size, what))
    if length > limit:
        raise MalformedPackage(f"the package's {what} is larger than {limit} bytes")
    return _read_exact(stream, length, what)


def _parse_signature(block: bytes) -> tuple[str, bytes]:
    try:
        raw = json.loads(block.decode("utf-8"))
        signer, value = raw["key"], raw["sig"]
        if not isinstance(signer, str) or not isinstance(value, str):
            raise TypeError
        signature = base64.b64decode(value, validate=True)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise MalformedPackage("the package's signature block is malformed") from None
    if not KEY_ID_PATTERN.match(signer) or len(signature) != 64:
        raise MalformedPackage("the package's signature block is malformed")
    return signer, signature


def read_header(stream: BinaryIO) -> PackageHeader:
    """The manifest and signature of a package, leaving ``stream`` at its payload.

    Checks the form only; nothing here says the package is trustworthy."""
    if _read_exact(stream, len(MAGIC), "header") != MAGIC:
        raise MalformedPackage("not a Helpline package (bad magic)")
    manifest_bytes = _read_block(stream, MAX_MANIFEST, "manifest")
    manifest = Manifest.from_bytes(manifest_bytes)
    block = _read_block(stream, MAX_SIGNATURE_BLOCK, "signature")
    signer, signature = _parse_signature(block) if block else (None, None)
    offset = len(MAGIC) + 2 * _LENGTH.size + len(manifest_bytes) + len(block)
    return PackageHeader(manifest, manifest_bytes, signer, signature, offset)


def read_header_file(path: Path) -> PackageHeader:
    with open(path, "rb") as stream:
        return read_header(stream)


def verify_package(path: Path, trusted: PublisherKeys) -> PackageHeader:
    """The package's header once its signature (by a key in ``trusted``) and its payload
    (size and SHA-256 as the signed manifest says) are both right; else PackageError."""
    with open(path, "rb") as stream:
        header = read_header(stream)
        if header.signer is None or header.signature is None:
            raise UnsignedPackage("the package is not signed")
        key = trusted.by_id.get(header.signer)
        if key is None:
            raise UnknownPublisher(f"the package is signed by an unknown key {header.signer}")
        try:
            key.verify(header.signature, header.manifest_bytes)
        except InvalidSignature:
            raise BadSignature("the package's signature does not match its manifest") from None
        hasher = hashlib.sha256()
        size = 0
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > header.manifest.payload_size:
                raise PayloadMismatch("the payload is larger than its manifest says")
            hasher.update(chunk)
    if size != header.manifest.payload_size:
        raise PayloadMismatch("the payload is shorter than its manifest says")
    if not hmac.compare_digest(hasher.hexdigest(), header.manifest.payload_sha256):
        raise PayloadMismatch("the payload's SHA-256 does not match the signed manifest")
    return header


# -- writing ---------------------------------------------------------------------------------


def _write_package(
    out: Path, manifest_bytes: bytes, signature_block: bytes, payload: BinaryIO
) -> None:
    """Write atomically: a temporary file beside ``out``, renamed over it when complete."""
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as target:
            target.write(MAGIC)
            target.write(_LENGTH.pack(len(manifest_bytes)) + manifest_bytes)
            target.write(_LENGTH.pack(len(signature_block)) + signature_block)
            while chunk := payload.read(_CHUNK):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _tar_directory(directory: Path, target: BinaryIO) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=target, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(
                path, arcname=str(path.relative_to(directory)), recursive=False, filter=clean
            )


def build_package(
    directory: Path,
    out: Path,
    *,
    name: str,
    version: str,
    install: Iterable[str],
    kind: str = "software",
    platform: str = "any",
    created: int | None = None,
) -> Manifest:
    """Pack ``directory`` into an unsigned package at ``out``."""
    if not directory.is_dir():
        raise PackageError(f"{directory} is not a directory")
    with tempfile.TemporaryFile() as payload:
        _tar_directory(directory, payload)
        size = payload.tell()
        payload.seek(0)
        hasher = hashlib.sha256()
        while chunk := payload.read(_CHUNK):
            hasher.update(chunk)
        manifest = Manifest(
            name=name,
            version=version,
            kind=kind,
            platform=platform,
            install=tuple(install),
            payload_sha256=hasher.hexdigest(),
            payload_size=size,
            created=int(time.time()) if created is None else created,
        )
        payload.seek(0)
        _write_package(out, manifest.canonical_bytes(), b"", payload)
    return manifest


def sign_package(path: Path, key: Ed25519PrivateKey, out: Path | None = None) -> PackageHeader:
    """Sign the package at ``path`` (replacing any signature); written to ``out`` or in place.

    The payload is checked against the manifest first: a publisher never signs bytes
    that do not match what it signs for."""
    with open(path, "rb") as stream:
        header = read_header(stream)
        hasher = hashlib.sha256()
        size = 0
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            hasher.update(chunk)
        if size != header.manifest.payload_size or hasher.hexdigest() != (
            header.manifest.payload_sha256
        ):
            raise PayloadMismatch("the payload does not match the manifest: rebuild the package")
        signature = key.sign(header.manifest_bytes)
        signer = key_id(key.public_key())
        block = _canonical({"key": signer, "sig": base64.b64encode(signature).decode()})
        stream.seek(header.payload_offset)
        _write_package(out or path, header.manifest_bytes, block, stream)
    return PackageHeader(header.manifest, header.manifest_bytes, signer, signature, 0)


def payload_stream(path: Path) -> tuple[PackageHeader, BinaryIO]:
    """An open stream positioned at the payload, and the header (the caller closes it)."""
    stream = open(path, "rb")  # noqa: SIM115 - handed to the caller
    try:
        return read_header(stream), stream
    except BaseException:
        stream.close()
        raise


def extract_payload(path: Path, header: PackageHeader, target: Path) -> None:
    """Unpack a verified package's payload into ``target`` (tar's "data" filter: no
    absolute paths, no ``..``, no links out of ``target``, no device files)."""
    with open(path, "rb") as stream:
        stream.seek(header.payload_offset)
        with tarfile.open(fileobj=stream, mode="r:gz") as archive:
            try:
                archive.extractall(target, filter="data")
            except tarfile.FilterError as exc:
                raise PackageError(f"the payload holds an unsafe entry: {exc}") from None
