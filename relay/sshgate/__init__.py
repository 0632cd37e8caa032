"""The SSH gateway: ``ssh -p 2222 USER:DEVICE@relay [CMD]`` opens a shell session.

Any OpenSSH client reaches a device through the same session machinery as the
console (:class:`~relay.broker.Broker`: authorisation, consent, recording,
audit). The gateway is an asyncssh server inside the relay's process, started
by :func:`~relay.app.start_relay` when ``[ssh] listen`` is set, with the host
key ``DATA/ssh_host_ed25519_key`` that ``helpline-relay init`` wrote.

Modules, one per concept:

* :mod:`.server` -- the listener, its asyncssh options, shutdown.
* :mod:`.login` -- who is connecting: ``USER:DEVICE``, the user's registered key,
  then the TOTP code by keyboard-interactive (the order and why it cannot be
  skipped are explained there).
* :mod:`.session` -- one SSH session channel as the technician's leg of a
  broker session: pty and window size, exec or shell, flow control both ways,
  exit status, and the messages a technician sees on stderr.

Nothing but ``session`` channels with ``shell`` and ``exec`` requests is served:
no port forwarding, agent or X11 forwarding, subsystems, SCP or SFTP.
"""

from __future__ import annotations

from .server import SshGateway, start_gateway

__all__ = ["SshGateway", "start_gateway"]
