"""Errors that carry a message for the user (what is wrong and what to do), shown without a traceback."""


class UserError(Exception):
    """Bad input or settings: the message says what to fix. The CLI prints it; the service returns it as 4xx."""


class InputError(UserError):
    """An input file (image, video, model) cannot be used; the message names the file and the cause."""
