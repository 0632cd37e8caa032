"""The SSH gateway: ``ssh -p 2222 USER:DEVICE@relay [CMD]`` opens a shell session;
``sftp`` and ``scp`` reach the device's files.

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
* :mod:`.router` -- what one ``session`` channel is: a shell/exec, or a file
  server (the ``sftp`` subsystem, or ``scp``).
* :mod:`.session` -- one SSH session channel as the technician's leg of a
  broker session: pty and window size, exec or shell, flow control both ways,
  exit status, and the messages a technician sees on stderr.
* :mod:`.sftp` -- the SFTP server (asyncssh's, also behind legacy ``scp -O``)
  mapping SFTP requests onto the device's files.
* :mod:`.sftp_files` -- the files session behind it: the technician's leg of a
  ``files`` session and the relay's client of the files protocol.
* :mod:`.transfers` and :mod:`.spool` -- downloads and uploads as spool files
  under ``DATA/spool/`` (bounded memory, deleted on every path).

``sftp`` and ``scp`` take ``USER:DEVICE@HOST`` for ``HOST:PATH``: give the login
as ``-o User=USER:DEVICE``. No port forwarding, agent or X11 forwarding, and no
subsystem but ``sftp``.
"""

from __future__ import annotations

from .server import SshGateway, start_gateway

__all__ = ["SshGateway", "start_gateway"]
