"""cmp-deploy runtime: voice -> 3D face mesh with ONNX Runtime. Never imports torch."""
from runtime.errors import (CheckpointError, CmpError, EngineError, InputError, InputWarning, LimitError, ModelError,
                            NoSpeechError, OutputError)
from runtime.predictor import Predictor
from runtime.result import Prediction
from runtime.version import __version__

__all__ = ["Predictor", "Prediction", "CmpError", "InputError", "LimitError", "NoSpeechError", "CheckpointError",
           "ModelError", "EngineError", "OutputError", "InputWarning", "__version__"]
