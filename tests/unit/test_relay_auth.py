"""Pieces of relay authentication that need no server: TOTP steps and address throttling."""

from __future__ import annotations

from datetime import UTC, datetime

import pyotp

from relay.auth import AddressThrottle, hash_token, matching_totp_step, new_totp_secret

NOW = 1_800_000_000.0


def test_totp_accepts_current_and_adjacent_steps_only() -> None:
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    step = totp.timecode(datetime.fromtimestamp(NOW, tz=UTC))
    for offset in (-1, 0, 1):
        assert matching_totp_step(secret, totp.generate_otp(step + offset), NOW) == step + offset
    assert matching_totp_step(secret, totp.generate_otp(step + 2), NOW) is None
    assert matching_totp_step(secret, totp.generate_otp(step - 2), NOW) is None


def test_totp_rejects_malformed_codes() -> None:
    secret = new_totp_secret()
    for code in ("", "12345", "1234567", "abcdef", "12 456"):
        assert matching_totp_step(secret, code, NOW) is None


def test_address_throttle_blocks_after_limit_and_forgets_after_window() -> None:
    throttle = AddressThrottle(limit=3, window=60)
    for i in range(3):
        assert not throttle.blocked("10.0.0.1", NOW + i)
        throttle.fail("10.0.0.1", NOW + i)
    assert throttle.blocked("10.0.0.1", NOW + 3)
    assert not throttle.blocked("10.0.0.2", NOW + 3)
    assert not throttle.blocked("10.0.0.1", NOW + 70)


def test_address_throttle_memory_is_bounded(monkeypatch: object) -> None:
    import relay.auth as auth

    monkeypatch.setattr(auth, "_MAX_TRACKED_ADDRESSES", 100)  # type: ignore[attr-defined]
    throttle = AddressThrottle(limit=5, window=60)
    for i in range(1000):
        throttle.fail(f"addr{i}", NOW)
    assert len(throttle._failures) == 100
    assert not throttle.blocked("addr0", NOW)


def test_token_hash_is_sha256_hex_and_not_the_token() -> None:
    digest = hash_token("hl_secret")
    assert len(digest) == 64 and "secret" not in digest
    assert digest == hash_token("hl_secret") != hash_token("hl_secreT")
