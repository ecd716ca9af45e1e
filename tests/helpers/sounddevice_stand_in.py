"""A stand-in for the ``sounddevice`` module (no machine of this project has a microphone)."""
from __future__ import annotations

import types

STAND_IN = '''
"""Stand-in for the sounddevice module: a known signal instead of a microphone."""
import numpy as np

class PortAudioError(Exception):
    pass

calls = []
SIGNAL = None  # int16 samples returned by rec() (cropped/tiled to the requested length)

def query_devices(device=None, kind=None):
    return {"name": "stand-in microphone", "max_input_channels": 1}

def check_input_settings(device=None, channels=None, dtype=None, extra_settings=None, samplerate=None):
    calls.append(("check", channels, dtype, samplerate))

def rec(frames, samplerate=None, channels=None, dtype=None):
    calls.append(("rec", frames, samplerate, channels, dtype))
    signal = SIGNAL if SIGNAL is not None else _default()
    return np.resize(signal, frames).astype(dtype).reshape(frames, channels)

def wait():
    calls.append(("wait",))

def _default():
    from runtime.demo_signal import demo_voice
    return demo_voice()
'''


def stand_in_module() -> types.ModuleType:
    module = types.ModuleType("sounddevice")
    exec(STAND_IN, module.__dict__)
    return module
