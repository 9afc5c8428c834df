"""Exceptions whose message is one line that names the culprit (file, config key, URL)."""


class MatchReproError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 1."""


class ConfigError(MatchReproError):
    """A config key is missing, unknown or of the wrong type."""


class DatasetError(MatchReproError):
    """A dataset folder or file is missing or malformed."""


class ImageReadError(DatasetError):
    """An image file is missing or cannot be decoded."""


class NotYetAvailableError(MatchReproError):
    """A workflow step whose implementation belongs to a later issue."""
