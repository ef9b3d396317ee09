"""The one exception family the CLI turns into a one-line message and exit status 1."""


class MixcError(Exception):
    """A user-facing failure: bad input, a missing file, a corrupt shard. Never a bug."""
