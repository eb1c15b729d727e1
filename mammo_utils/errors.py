"""Errors meant for people: one line that says what went wrong and what to run first."""


class MammoError(Exception):
    """Base class for every error the package raises on purpose.

    The message is a complete sentence for a person; the CLI prints it on one line, without a traceback.
    """


class ConfigError(MammoError):
    """A setting (profile, dataset, override) is unknown or has an invalid value."""


class MissingStageOutput(MammoError):
    """An earlier stage has not been run (or its output is gone)."""


class DataError(MammoError):
    """An input file or manifest is missing, unreadable or inconsistent."""


class CheckpointError(MammoError):
    """A checkpoint is missing, corrupt or made for another architecture."""
