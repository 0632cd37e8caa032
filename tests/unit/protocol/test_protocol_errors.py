"""The exception tree, stable codes, and rebuilding a peer's error from its code."""

from __future__ import annotations

import pytest

from protocol import errors
from protocol.errors import (
    AuthError,
    Conflict,
    ConsentDenied,
    ErrorCode,
    FlowControlError,
    FrameError,
    FrameTooLarge,
    HandshakeError,
    HelplineError,
    InvalidMessage,
    LimitExceeded,
    NotFound,
    NotPermitted,
    ProtocolError,
    RateLimited,
    RemoteError,
    TooManyAttempts,
    UnknownChannel,
    UnknownMessage,
    UsageError,
    error_from_code,
)

#: The class each code rebuilds into; the codes not here are not errors.
EXPECTED_CLASS: dict[ErrorCode, type[HelplineError]] = {
    ErrorCode.MALFORMED_FRAME: FrameError,
    ErrorCode.FRAME_TOO_LARGE: FrameTooLarge,
    ErrorCode.UNKNOWN_MESSAGE: UnknownMessage,
    ErrorCode.UNSUPPORTED_VERSION: HandshakeError,
    ErrorCode.INVALID_MESSAGE: InvalidMessage,
    ErrorCode.FLOW_CONTROL: FlowControlError,
    ErrorCode.TOO_MANY_CHANNELS: LimitExceeded,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.UNEXPECTED_MESSAGE: ProtocolError,
    ErrorCode.UNKNOWN_CHANNEL: UnknownChannel,
    ErrorCode.LIMIT_EXCEEDED: LimitExceeded,
    ErrorCode.AUTH_FAILED: AuthError,
    ErrorCode.NOT_PERMITTED: NotPermitted,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.TOO_MANY_ATTEMPTS: TooManyAttempts,
    ErrorCode.CONSENT_DENIED: ConsentDenied,
}

#: Codes with no class of their own: they come back as RemoteError.
NOT_ERRORS = {ErrorCode.NORMAL, ErrorCode.GOING_AWAY, ErrorCode.INTERNAL}


def test_codes_are_stable() -> None:
    assert {code.name: int(code) for code in ErrorCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "INTERNAL": 4000,
        "MALFORMED_FRAME": 4001,
        "FRAME_TOO_LARGE": 4002,
        "UNKNOWN_MESSAGE": 4003,
        "UNSUPPORTED_VERSION": 4004,
        "INVALID_MESSAGE": 4005,
        "FLOW_CONTROL": 4006,
        "TOO_MANY_CHANNELS": 4007,
        "RATE_LIMITED": 4008,
        "UNEXPECTED_MESSAGE": 4009,
        "UNKNOWN_CHANNEL": 4010,
        "LIMIT_EXCEEDED": 4011,
        "AUTH_FAILED": 4401,
        "NOT_PERMITTED": 4403,
        "NOT_FOUND": 4404,
        "CONFLICT": 4409,
        "TOO_MANY_ATTEMPTS": 4429,
        "CONSENT_DENIED": 4450,
    }


def test_every_code_is_covered_by_these_tests() -> None:
    assert set(EXPECTED_CLASS) | NOT_ERRORS == set(ErrorCode)


@pytest.mark.parametrize("code", list(EXPECTED_CLASS), ids=lambda c: c.name)
def test_error_from_code(code: ErrorCode) -> None:
    error = error_from_code(int(code), "peer said no")
    assert type(error) is EXPECTED_CLASS[code]
    # the code received is kept, also where several codes share one class
    assert error.code == code
    assert str(error) == "peer said no"
    assert error.message == "peer said no"


@pytest.mark.parametrize("code", [*sorted(NOT_ERRORS), 4999, 4002 + 1000, 0, -1])
def test_unknown_code_is_a_remote_error(code: int) -> None:
    error = error_from_code(code, "something odd")
    assert type(error) is RemoteError
    assert error.remote_code == code
    assert str(error) == "something odd"
    assert isinstance(error, HelplineError)


def test_remote_error_default_message() -> None:
    error = RemoteError(4998)
    assert error.remote_code == 4998
    assert str(error) == "internal error"
    assert error.code is ErrorCode.INTERNAL


ALL_CLASSES = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, HelplineError) and cls is not RemoteError
]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_class_code_rebuilds_the_same_class(cls: type[HelplineError]) -> None:
    # a local error sent as a Goodbye comes back as the same class on the other side
    rebuilt = error_from_code(cls.code, str(cls()))
    if cls is HelplineError:
        assert type(rebuilt) is RemoteError
    else:
        assert type(rebuilt) is cls


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_str_is_the_safe_message(cls: type[HelplineError]) -> None:
    default = cls()
    assert str(default) == cls.default_message == default.message
    assert str(default)
    custom = cls("channel 3: window exceeded")
    assert str(custom) == "channel 3: window exceeded" == custom.message
    assert custom.args == ("channel 3: window exceeded",)
    # an empty message is kept, not replaced by the default
    assert str(cls("")) == ""


def test_peer_faults_are_protocol_errors() -> None:
    for cls in (
        FrameError,
        LimitExceeded,
        FrameTooLarge,
        UnknownMessage,
        InvalidMessage,
        HandshakeError,
        FlowControlError,
        UnknownChannel,
        RateLimited,
    ):
        assert issubclass(cls, ProtocolError)
    for cls in (AuthError, NotPermitted, NotFound, Conflict, ConsentDenied, RemoteError):
        assert not issubclass(cls, ProtocolError)
    assert issubclass(TooManyAttempts, AuthError)
    # a handler of LimitExceeded also catches an oversized frame
    assert issubclass(FrameTooLarge, LimitExceeded)


def test_frame_too_large() -> None:
    error = FrameTooLarge()
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert str(error) == "frame too large"
    assert "FrameTooLarge" in errors.__all__


def test_usage_error_is_not_a_helpline_error() -> None:
    # caller misuse must not be caught by handlers of peer faults, nor sent
    assert not issubclass(UsageError, HelplineError)
    assert not hasattr(UsageError("x"), "code")


def test_generic_protocol_error_is_an_unexpected_message() -> None:
    error = ProtocolError()
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE
    assert str(error) == "protocol error"
    assert FrameError.code is ErrorCode.MALFORMED_FRAME
    assert HelplineError.code is ErrorCode.INTERNAL
