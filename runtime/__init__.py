"""cmp-deploy runtime: voice -> 3D face mesh with ONNX Runtime. Never imports torch."""
from runtime.errors import CheckpointError, CmpError, EngineError, InputError, InputWarning, ModelError, NoSpeechError
from runtime.predictor import Predictor
from runtime.result import Prediction

__version__ = "0.1.0"
__all__ = ["Predictor", "Prediction", "CmpError", "InputError", "NoSpeechError", "CheckpointError",
           "ModelError", "EngineError", "InputWarning", "__version__"]
