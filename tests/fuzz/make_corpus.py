"""Writes small seed inputs for the harnesses: python tests/fuzz/make_corpus.py OUT_DIR
(creates OUT_DIR/audio, OUT_DIR/fbank, OUT_DIR/mesh_text, OUT_DIR/mesh_arrays and OUT_DIR/infer; a
mesh or request seed's first byte picks the reader or the encoding, as in the harnesses)."""
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
        # a FLAC whose STREAMINFO hides its length (total samples 0): decoded with a running count
        hidden = bytearray(seeds["a.flac"])
        v = int.from_bytes(hidden[18:26], "big")
        hidden[18:26] = (v >> 36 << 36).to_bytes(8, "big")
        seeds["hidden_length.flac"] = bytes(hidden)
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
    mesh_seeds(out, rng)
    infer_seeds(out)
    counts = ", ".join(f"{len(list((out / d).iterdir()))} {d}"
                       for d in ("audio", "fbank", "mesh_text", "mesh_arrays", "infer"))
    print(f"seeds: {counts} in {out}")


OBJ, XYZ, NPY, NPZ = b"\x00", b"\x01", b"\x00", b"\x01"  # the first byte: which reader


def mesh_seeds(out: Path, rng: np.random.Generator) -> None:
    v = np.round(rng.normal(0, 50, (6, 3)), 3)
    rows = "".join(f"v {a:.9g} {b:.9g} {c:.9g}\n" for a, b, c in v)
    text = {
        "plain.obj": OBJ + (rows + "f 1 2 3\nf 4 5 6\n").encode(),
        "colours.obj": OBJ + "".join(f"v {a:.9g} {b:.9g} {c:.9g} 0.5 0.25 1\n" for a, b, c in v).encode() + b"f 1 2 3\n",
        "corners.obj": OBJ + b"# c\r\n" + rows.encode() + b"vt 0 0\nvn 0 0 1\nf 1/1/1 2//1 3/1\nf 1 2 3 4\n",
        "bad_index.obj": OBJ + rows.encode() + b"f 1 2 1000000000000000000000000000000\n",
        "points.xyz": XYZ + b"# header\n" + "".join(f"{a:.9g} {b:.9g} {c:.9g}\n" for a, b, c in v).encode(),
        "blank.xyz": XYZ + b"\n 1 2 3\n\t\n4 5 6\r\n",
    }
    folder = out / "mesh_text"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in text.items():
        (folder / name).write_bytes(data)

    def npy(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    def npz(compressed: bool, **arrays) -> bytes:
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **arrays)
        return buf.getvalue()

    arrays = {
        "f64.npy": NPY + npy(v),
        "f32_fortran.npy": NPY + npy(np.asfortranarray(v.astype(np.float32))),
        "big_endian.npy": NPY + npy(v.astype(">f8")),
        "int.npy": NPY + npy(v.astype(np.int16)),
        "result.npz": NPZ + npz(False, vertices=v + 1, vertices_frontal=v, triangles=np.array([[0, 1, 2]], np.int32)),
        "compressed.npz": NPZ + npz(True, vertices=v),
    }
    folder = out / "mesh_arrays"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in arrays.items():
        (folder / name).write_bytes(data)


def infer_seeds(out: Path) -> None:
    """Request bodies for fuzz_infer_request.py: the first byte is the mode, the next two the
    JSON header's length (modes 1-3)."""
    import json
    import zlib

    samples = {"name": "samples", "datatype": "INT16", "shape": [1, 4], "data": [1, -2, 3, -4]}
    json_body = json.dumps({"inputs": [samples], "parameters": {"sample_rate": 16000, "vad": False},
                            "outputs": [{"name": "params", "parameters": {"binary_data": True}}]}).encode()
    head = json.dumps({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
        {"name": "b", "datatype": "INT16", "shape": [2, 2], "parameters": {"binary_data_size": 8}}],
        "parameters": {"binary_data_output": True}}).encode()
    binary = head + np.arange(3, dtype="<f4").tobytes() + np.arange(4, dtype="<i2").tobytes()
    n = len(head).to_bytes(2, "little")
    gz = zlib.compressobj(wbits=31)
    seeds = {"json": b"\x00\x00\x00" + json_body, "binary": b"\x01" + n + binary,
             "gzip": b"\x02" + n + gz.compress(binary) + gz.flush(), "deflate": b"\x03" + n + zlib.compress(binary)}
    folder = out / "infer"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
