"""The one error type for user mistakes.

The CLI prints a :class:`RsSegError` as a single clean line (no traceback) and exits non-zero;
``--verbose`` shows the traceback. Anything else escaping is a bug in rsseg.
"""


class RsSegError(Exception):
    """A problem with the user's input (file, config, flag) that they can fix.

    The message names the problem and the fix, e.g. which file, which key, what was expected.
    """
