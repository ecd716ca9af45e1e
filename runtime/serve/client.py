"""The client side of the serving contract, for ``cmp-face serve`` and Triton alike.

Triton's ensemble ``cmp_<pipeline>`` takes samples as given (no VAD, no resampling), so the
release's preprocessing happens here, before the request::

    from runtime.serve.client import infer, prepare_samples
    samples = prepare_samples("voice.wav")              # 16 kHz int16, silence removed
    out = infer("localhost:8000", samples)              # {'embedding', 'params', 'vertices'}

Needs ``tritonclient[http]``.
"""
from __future__ import annotations

import os

import numpy as np


def prepare_samples(source: str | os.PathLike | bytes | np.ndarray, sample_rate: float | None = None,
                    vad: bool = True) -> np.ndarray:
    """What the CLI does before its models: any audio -> mono 16 kHz int16 (``load_audio``),
    then the release's VAD. Raises our InputError / NoSpeechError with the CLI's messages."""
    from runtime.audio import load_audio
    from runtime.vad import remove_silence

    samples = load_audio(source, sample_rate)
    return remove_silence(samples) if vad else samples


def infer(url: str, samples: np.ndarray, pipeline: str = "supervised", outputs: list[str] | None = None,
          binary: bool = True) -> dict[str, np.ndarray]:
    """One utterance (1-D) or a batch of equal-length ones (``[B, S]``) through ``cmp_<pipeline>``
    on the server at ``url`` (``host:port``); binary outputs unless ``binary=False``."""
    import tritonclient.http as th

    # FP32, int16-scale: what Triton's ensemble declares (ours also takes INT16); exact for int16.
    batch = np.atleast_2d(np.asarray(samples)).astype(np.float32)
    inp = th.InferInput("samples", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    wanted = [th.InferRequestedOutput(n, binary_data=binary) for n in outputs] if outputs else None
    with th.InferenceServerClient(url) as client:
        result = client.infer(f"cmp_{pipeline}", [inp], outputs=wanted)
    names = [o["name"] for o in result.get_response()["outputs"]]
    return {n: result.as_numpy(n) for n in names}
