"""Errors the PKI raises on purpose: today, a certificate request the relay refuses.

:class:`CertificateRequestError` is peer input gone wrong (an agent's CSR that does
not parse, is not signed by its own key, or uses another key type than ECDSA
P-256). It carries :attr:`~protocol.errors.ErrorCode.INVALID_MESSAGE`, not
``AUTH_FAILED``: the enrolment token is what authenticates an agent, and the relay
checks it separately; a bad CSR is a malformed request. Its messages are safe to
send back to the agent.

Caller misuse (a CA key that does not match its certificate, an empty name list,
a malformed device id chosen by the relay itself) raises plain :class:`ValueError`.
"""

from __future__ import annotations

from protocol.errors import ErrorCode, HelplineError

__all__ = ["CertificateRequestError"]


class CertificateRequestError(HelplineError):
    """An agent's certificate signing request was refused."""

    code = ErrorCode.INVALID_MESSAGE
    default_message = "invalid certificate signing request"
