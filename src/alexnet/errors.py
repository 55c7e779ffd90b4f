"""The one exception type the CLI shows as a one-line message (no traceback unless ``--debug``)."""


class AlexNetError(Exception):
    """Bad input from the user: a path, a value or a file that cannot be used, and why.

    The message names the file or value and what is wrong with it, in one line.
    """
