"""What every ``helpline`` command shares: the one-line error and the logged-in client."""

from __future__ import annotations

from .client import HelplineClient
from .credentials import load_credentials


class CliError(Exception):
    """A problem to report in one line, with exit status 1."""


def logged_in_client() -> HelplineClient:
    credentials = load_credentials()
    if credentials is None:
        raise CliError("not logged in; run 'helpline login URL --user NAME'")
    if credentials.expired:
        raise CliError("your login has expired; run 'helpline login' again")
    return HelplineClient(credentials.url, credentials.ca_pem, credentials.token)
