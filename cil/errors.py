"""Errors that mean "the user asked for something wrong", as opposed to bugs."""


class UserError(Exception):
    """Bad input (unknown name, wrong type, missing data ...).

    The command line prints the message as one line, prefixed with ``error:``, and exits
    with status 2. Messages say what was wrong and what would be right.
    """
