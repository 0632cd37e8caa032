"""A real TLS 1.3 handshake on loopback with the stdlib ssl module and our certificates.

The server plays the relay (its certificate from the CA, client certificates
required); the client plays an agent (its certificate from sign_agent_csr, the
CA pinned). In TLS 1.3 the client finishes its side of the handshake before the
server has judged the client certificate, so a refusal shows up on the client's
first read, as the server's alert.
"""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest

from certs import device_id_of, load_certificate

GREETING = b"hello agent"
TIMEOUT = 5.0


def server_context(ca, server) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(server.cert_path, server.key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca.cert_path)
    return ctx


def client_context(ca, agent) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + hostname check
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=ca.cert_path)  # pin the relay CA only
    ctx.load_cert_chain(agent.cert_path, agent.key_path)
    return ctx


def serve_once(listener: socket.socket, ctx: ssl.SSLContext) -> tuple[str | None, str]:
    """Accept one connection, handshake, greet; return (TLS version, client device id)."""
    conn, _ = listener.accept()
    conn.settimeout(TIMEOUT)
    with ctx.wrap_socket(conn, server_side=True) as tls:
        peer_der = tls.getpeercert(binary_form=True)
        assert peer_der is not None
        tls.sendall(GREETING)
        return tls.version(), device_id_of(load_certificate(peer_der))


def connect(ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str = "127.0.0.1"):
    """Run serve_once in a thread and connect to it; return (client result, server future)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        with ThreadPoolExecutor(max_workers=1) as pool:
            served = pool.submit(serve_once, listener, server_ctx)
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                    ctx.wrap_socket(raw, server_hostname=host) as tls,
                ):
                    client_result: object = (tls.version(), tls.recv(len(GREETING)))
            except (ssl.SSLError, OSError) as exc:
                client_result = exc
            served.exception(timeout=TIMEOUT)  # wait for the server side either way
            return client_result, served


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mutual_tls13_handshake_succeeds(ca, server, agent, device_id, host) -> None:
    client_result, served = connect(client_context(ca, agent), server_context(ca, server), host)
    assert client_result == ("TLSv1.3", GREETING)
    assert served.result() == ("TLSv1.3", device_id)


def test_server_refuses_a_client_certificate_from_another_ca(ca, server, stranger_agent) -> None:
    client_result, served = connect(client_context(ca, stranger_agent), server_context(ca, server))
    assert isinstance(served.exception(), ssl.SSLError)
    assert "certificate verify failed" in str(served.exception()).lower()
    assert isinstance(client_result, ssl.SSLError)
    assert "unknown ca" in str(client_result).lower()


def test_server_refuses_a_client_without_a_certificate(ca, server) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=ca.cert_path)
    client_result, served = connect(ctx, server_context(ca, server))
    assert isinstance(served.exception(), ssl.SSLError)
    assert "peer did not return a certificate" in str(served.exception()).lower()
    assert isinstance(client_result, ssl.SSLError)
    assert "certificate required" in str(client_result).lower()


def test_client_pinning_the_ca_refuses_a_server_from_another_ca(
    ca, other_ca, stranger_server, agent
) -> None:
    client_result, served = connect(
        client_context(ca, agent), server_context(other_ca, stranger_server)
    )
    assert isinstance(client_result, ssl.SSLCertVerificationError)
    assert client_result.reason == "CERTIFICATE_VERIFY_FAILED"
    assert isinstance(served.exception(), ssl.SSLError)


def test_client_checks_the_server_name(ca, server, agent) -> None:
    client_result, _ = connect(
        client_context(ca, agent), server_context(ca, server), host="not-the-relay.test"
    )
    assert isinstance(client_result, ssl.SSLCertVerificationError)
    assert "hostname mismatch" in client_result.verify_message.lower()
