"""Exceptions raised by cmp-deploy. The CLI prints their message in one line."""


class CmpError(Exception):
    """Base class: every error we raise on purpose derives from it."""


class InputError(CmpError, ValueError):
    """The audio, features or arrays handed to us are unusable."""


class LimitError(InputError):
    """The input is larger (or longer) than a limit allows (a server answers 413)."""


class NoSpeechError(InputError):
    """Voice activity detection found no speech in the recording."""


class OutputError(CmpError):
    """An output folder or file cannot be written (read-only, no space, not a folder)."""


class CheckpointError(CmpError):
    """A release checkpoint is missing, unreadable or does not match the model."""


class ModelError(CmpError):
    """A models folder (ONNX files, triangles, manifest) is missing or inconsistent."""


class EngineError(ModelError):
    """A TensorRT engine is missing, was built for another GPU/TensorRT/model, or failed to build."""


class InputWarning(UserWarning):
    """The input was usable, but not what it declared (e.g. a truncated WAV file)."""
