"""Errors that describe a problem with the user's input.

The CLI and the server turn these into one clear line (CLI: exit code 2; HTTP: a 4xx with a
JSON body). Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """Base class: the message names the input and what is wrong with it."""


class AudioInputError(InputError):
    """Unreadable, empty or unusable audio."""


class AvatarInputError(InputError):
    """An image that cannot be used as an avatar (not an image, no face, face too small...)."""


class CheckpointError(InputError):
    """Missing, truncated, mismatched or unsafe checkpoint files."""


class ConfigError(InputError):
    """A bad configuration value, from TOML or from a flag."""
