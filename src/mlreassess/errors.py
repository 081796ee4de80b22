"""User-facing errors: the CLI prints them as one line, never as a traceback."""


class MlreassessError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The message should name the file (and row or sample) and what is wrong with it.
    """


class InputError(MlreassessError):
    """Bad input data: a malformed file, a box outside its image, an unknown label, ..."""
