"""Writes small seed inputs for the harnesses: python tests/fuzz/make_corpus.py OUT_DIR
(creates OUT_DIR/audio and OUT_DIR/fbank)."""
from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import numpy as np


def wav(payload: bytes, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16,
        riff: bytes = b"RIFF") -> bytes:
    e = ">" if riff == b"RIFX" else "<"
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack(e + "HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack(e + "I", len(fmt)) + fmt
    body += b"data" + struct.pack(e + "I", len(payload)) + payload + b"\0" * (len(payload) & 1)
    return riff + struct.pack(e + "I", len(body)) + body


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 3000, 800)).astype(np.int16)
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    seeds = {
        "pcm16.wav": wav(x.astype("<i2").tobytes()),
        "pcm16_stereo_8k.wav": wav(np.stack([x, x], 1).astype("<i2").tobytes(), channels=2, rate=8000),
        "pcm8.wav": wav((x // 256 + 128).astype(np.uint8).tobytes(), bits=8),
        "pcm24.wav": wav(b"".join((int(v) * 256).to_bytes(3, "little", signed=True) for v in x[:200]), bits=24),
        "float32.wav": wav((x / 32768).astype("<f4").tobytes(), tag=3, bits=32),
        "rifx16.wav": wav(x.astype(">i2").tobytes(), riff=b"RIFX"),
    }
    try:
        import soundfile as sf
        for fmt, sub in [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("AIFF", "PCM_16")]:
            buf = io.BytesIO()
            sf.write(buf, x, 16000, format=fmt, subtype=sub)
            seeds[f"a.{fmt.lower()}"] = buf.getvalue()
    except Exception as exc:  # soundfile missing: WAV seeds only
        print(f"no soundfile seeds: {exc}")
    for name, data in seeds.items():
        (audio / name).write_bytes(data)

    fbank = out / "fbank"
    fbank.mkdir(parents=True, exist_ok=True)
    for name, a in {"f32.npy": rng.normal(size=(3, 64)).astype(np.float32),
                    "f64_fortran.npy": np.asfortranarray(rng.normal(size=(2, 64))),
                    "f16.npy": rng.normal(size=(1, 64)).astype(np.float16),
                    "big_endian.npy": rng.normal(size=(2, 64)).astype(">f4"),
                    "wrong_shape.npy": np.zeros((2, 3), np.float32)}.items():
        np.save(fbank / name, a)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((1, 64), np.float32), version=(2, 0))
    (fbank / "v2.npy").write_bytes(buf.getvalue())
    print(f"seeds: {len(list(audio.iterdir()))} audio, {len(list(fbank.iterdir()))} fbank in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
