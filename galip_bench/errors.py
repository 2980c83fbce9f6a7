"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, bad checkpoint...). The message says how."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
