"""runtime.Predictor on fbank input: results, batching, bad input, and no torch at run time."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import Predictor
from runtime.errors import InputError, ModelError
from runtime.result import display_image
from tests.helpers.data import FBANKS, WAVS, requires


@pytest.fixture(scope="module")
def supervised(models_dir) -> Predictor:
    return Predictor(models_dir, "supervised", device="cpu")


@pytest.fixture(scope="module")
def unsupervised(models_dir) -> Predictor:
    return Predictor(models_dir, "unsupervised", device="cpu")


def fbank(frames: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(frames, 64)).astype(np.float32)


def test_supervised_result(supervised):
    r = supervised.predict(fbank())
    assert r.untrained and supervised.untrained
    assert r.embedding.shape == (64,) and abs(np.linalg.norm(r.embedding) - 1) < 1e-5
    assert r.params.shape == (51,) and r.vertices.shape == (53215, 3) and r.vertices.dtype == np.float32
    assert r.triangles.shape[1] == 3 and r.face_image is None and r.pose_R is None
    assert set(r.timings) == {"features", "encoder", "decoder", "postprocess", "total"}
    assert set(r.arrays()) == {"embedding", "params", "vertices"}


def test_unsupervised_result(unsupervised):
    r = unsupervised.predict(fbank())
    assert r.params.shape == (102,) and r.vertices.shape == (53215, 3)
    assert r.face_image.shape == (120, 120, 3) and r.face_image.dtype == np.uint8
    assert r.pose_R.shape == (3, 3) and r.pose_offset.shape == (3,)
    np.testing.assert_allclose(np.linalg.norm(r.pose_R, axis=1), 1, atol=1e-5)
    assert set(r.arrays()) == {"embedding", "params", "vertices", "face_image", "pose_R", "pose_offset",
                               "vertices_frontal"}


def test_display_image_is_the_releases_conversion():
    img = np.array([[[-2.0, -1.0], [0.0, 0.999]], [[1.0, 3.0], [0.5, -0.5]], [[0.1, 0.2], [0.3, 0.4]]],
                   dtype=np.float32)  # (3, 2, 2) RGB
    out = display_image(img)
    expected = (np.clip(img, -1, 1) * np.float32(127.5) + np.float32(128)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected.transpose(1, 2, 0)[:, :, ::-1])
    assert out[0, 0].tolist() == [140, 255, 0]  # B from 0.1, G from 1.0 (255.5 truncated), R from -2


@requires(FBANKS, "the release's preprocessed fbanks")
def test_npy_file_equals_array_and_matches_pytorch(supervised, pack_dir):
    torch = pytest.importorskip("torch")
    from export.checkpoints import load_release

    r = supervised.predict(str(FBANKS[0]))
    assert np.array_equal(r.vertices, supervised.predict(np.load(FBANKS[0])).vertices)
    loaded = load_release(pack_dir, "supervised")
    with torch.no_grad():
        emb = loaded.encoder(torch.from_numpy(np.load(FBANKS[0]).T[None].copy()))
        params, vertices = loaded.decoder(emb)
    np.testing.assert_allclose(r.vertices, vertices[0].numpy(), rtol=0, atol=1e-4 * float(vertices.abs().max()))
    np.testing.assert_allclose(r.params, params[0].numpy(), rtol=0, atol=1e-5)


def test_batch_of_different_lengths_equals_single_predictions(unsupervised):
    inputs = [fbank(1000, 1), fbank(1269, 2), fbank(1000, 3), fbank(1751, 4)]
    batch = unsupervised.predict_batch(inputs)
    for x, r in zip(inputs, batch):
        one = unsupervised.predict(x)
        np.testing.assert_allclose(r.embedding, one.embedding, atol=1e-6)
        np.testing.assert_allclose(r.vertices, one.vertices, atol=1e-3)
        np.testing.assert_array_equal(r.face_image.astype(int), one.face_image.astype(int))


@pytest.mark.parametrize("value, message", [
    (np.zeros((1000, 63), np.float32), "fbank: expected shape (T, 64), got (1000, 63)"),
    (np.zeros((64, 1000), np.float32), "fbank: expected shape (T, 64), got (64, 1000) (transposed? the "
                                       "release's files are (T, 64))"),
    (np.zeros((2, 1000, 64), np.float32), "fbank: expected shape (T, 64), got (2, 1000, 64)"),
    (np.zeros((1000, 64), np.int16), "fbank: dtype int16 is not supported; expected float32 features of shape (T, 64)"),
    (np.zeros((0, 64), np.float32), "fbank: empty (0 frames)"),
    (np.where(np.arange(64000).reshape(1000, 64) == 6500, np.nan, 0).astype(np.float32),
     "fbank: contains NaN or inf values (first at frame 101)"),
    (np.full((10, 64), np.inf, np.float32), "fbank: contains NaN or inf values (first at frame 0)"),
    (np.zeros(16000, np.float32), "a 1-D array is audio: pass sample_rate=... (or give (T, 64) fbank features)"),
])
def test_bad_arrays(supervised, value, message):
    with pytest.raises(InputError, match=re.escape(message)):
        supervised.predict(value)


def test_bad_files_and_types(supervised, tmp_path):
    missing = tmp_path / "missing.npy"
    with pytest.raises(InputError, match=re.escape(f"{missing}: file not found")):
        supervised.predict(missing)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x00\x01not numpy")
    with pytest.raises(InputError, match=re.escape(f"{garbage}: not a readable .npy array")):
        supervised.predict(garbage)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=re.escape(
            f"{pickled}: dtype object is not supported; expected float32 features of shape (T, 64)")):
        supervised.predict(pickled)
    with pytest.raises(InputError, match=re.escape("unsupported input type list")):
        supervised.predict([1.0, 2.0])
    with pytest.raises(InputError, match=re.escape("predict_batch: no inputs")):
        supervised.predict_batch([])


def test_models_folder_errors(models_dir, tmp_path):
    with pytest.raises(ModelError, match=re.escape(f"{tmp_path / 'none'}: models folder not found")):
        Predictor(tmp_path / "none")
    with pytest.raises(ModelError, match=re.escape(f"{tmp_path / 'models.json'}: not found; is {tmp_path} a models "
                                                   "folder written by 'cmp-face export' (or python export/to_onnx.py)?")):
        Predictor(tmp_path)
    with pytest.raises(ModelError, match=re.escape("unknown pipeline 'both': choose one of supervised, unsupervised")):
        Predictor(models_dir, "both")
    with pytest.raises(ModelError, match=re.escape("unknown device 'tpu': choose auto, cpu, cuda, cuda:N or gpu")):
        Predictor(models_dir, device="tpu")
    copy = tmp_path / "copy"
    shutil.copytree(models_dir, copy)
    manifest = json.loads((copy / "models.json").read_text())
    manifest["pipelines"] = ["supervised"]
    (copy / "models.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=re.escape(f"{copy} holds no unsupervised decoder (exported: supervised)")):
        Predictor(copy, "unsupervised")
    (copy / "encoder.onnx").write_bytes(b"truncated")
    with pytest.raises(ModelError, match=re.escape(f"{copy / 'encoder.onnx'}: ONNX Runtime cannot load this model")):
        Predictor(copy, "supervised")


def test_runtime_never_imports_torch(models_dir):
    code = (
        "import sys, numpy as np\n"
        "from runtime import Predictor\n"
        f"p = Predictor({str(models_dir)!r}, 'unsupervised', device='cpu')\n"
        "r = p.predict(np.random.default_rng(0).normal(size=(1000, 64)).astype(np.float32))\n"
        "r.render()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'export')))\n"
        "print('LOADED', bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_the_old_frontend_name_still_works_with_a_deprecation_warning(models_dir):
    with pytest.warns(DeprecationWarning, match=re.escape(
            "frontend 'onnx' is now called 'fused' (the fused voice-to-mesh graph); 'onnx' will be removed")):
        p = Predictor(models_dir, "supervised", device="cpu", frontend="onnx")
    assert p.frontend == "fused" and p.models.voice2mesh is not None
    with pytest.raises(ModelError, match=re.escape("unknown frontend 'torch': choose one of numpy, fused")):
        Predictor(models_dir, "supervised", device="cpu", frontend="torch")


@requires(WAVS, "the real speech recordings")
def test_audio_through_numpy_and_fused_onnx_frontends_agree(models_dir, unsupervised):
    fused = Predictor(models_dir, "unsupervised", device="cpu", frontend="fused")
    assert fused.models.voice2mesh is not None
    for wav in WAVS[:3]:
        a, b = unsupervised.predict(wav), fused.predict(str(wav))
        assert "voice2mesh" in b.timings and "fbank" in a.timings and "vad" in a.timings
        # The frontend graph matches the numpy log-mel to ~1e-5 absolute; the network keeps that small.
        np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-5)
        np.testing.assert_allclose(b.vertices, a.vertices, atol=1e-3 * np.abs(a.vertices).max())
    # fbank input still goes through encoder and decoder
    r = fused.predict(np.random.default_rng(0).normal(size=(1000, 64)).astype(np.float32))
    assert "encoder" in r.timings and "voice2mesh" not in r.timings


@requires(WAVS, "the real speech recordings")
def test_audio_array_and_file_give_the_same_mesh(supervised):
    from runtime.audio import load_audio

    samples = load_audio(WAVS[0])
    a = supervised.predict(WAVS[0])
    b = supervised.predict(samples, sample_rate=16000)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    stereo_float = np.stack([samples, samples], axis=1).astype(np.float32) / 32768
    c = supervised.predict(stereo_float, sample_rate=16000)
    np.testing.assert_array_equal(a.vertices, c.vertices)


def test_unknown_frontend(models_dir):
    with pytest.raises(ModelError, match=re.escape("unknown frontend 'torch': choose one of numpy, fused")):
        Predictor(models_dir, frontend="torch")


def test_render_overlay_depth_and_mesh_files(supervised, unsupervised, tmp_path):
    from runtime.mesh_io import read_png
    from runtime.render import render_overlap

    sup = supervised.predict(fbank(1000, 7))
    image = sup.render()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    depth = sup.depth()
    covered = np.isfinite(depth)
    # the depth map covers exactly the pixels the render drew (the background is uniform grey)
    np.testing.assert_array_equal(covered, (image != image[0, 0]).any(axis=2) | covered)
    assert 0.3 < covered.mean() < 0.95
    png, npy = sup.write_depth(tmp_path / "depth.png")
    assert read_png(png).dtype == np.uint16 and np.array_equal(np.load(npy), depth)

    uns = unsupervised.predict(fbank(1000, 8))
    np.testing.assert_array_equal(uns.render(), render_overlap(uns.vertices, uns.triangles, uns.face_image))
    assert uns.render(size=240).shape == (240, 240, 3)
    assert uns.depth().shape == (120, 120)
    blended = uns.overlay(np.full((200, 200, 3), 255, np.uint8), alpha=0.5)
    assert blended.shape == (200, 200, 3) and blended.min() >= 127  # half white everywhere
    with pytest.raises(InputError, match=re.escape(
            "overlay: expected a square uint8 (H, H, 3) BGR image, got uint8 (100, 200, 3)")):
        uns.overlay(np.zeros((100, 200, 3), np.uint8))

    ply = sup.write_ply(tmp_path / "m.ply")
    header = ply.read_bytes()[:300].split(b"end_header")[0].decode()
    assert "element vertex 53215" in header and f"element face {len(sup.triangles)}" in header
    obj = sup.write_obj(tmp_path / "m.obj", colors=np.full((53215, 3), 0.5, np.float32))
    first = obj.read_text().splitlines()[0].split()
    assert first[0] == "v" and len(first) == 7 and first[4:] == ["0.5", "0.5", "0.5"]


# --------------------------------------------------------------------------- bounded, checked input and output

def test_max_bytes_bounds_npy_and_audio_files(models_dir, tmp_path):
    import soundfile as sf

    npy = tmp_path / "f.npy"
    np.save(npy, fbank())
    wav = tmp_path / "v.wav"
    from runtime.demo_signal import demo_voice
    sf.write(wav, demo_voice(2.0), 16000, subtype="PCM_16")
    limit = min(npy.stat().st_size, wav.stat().st_size) - 1
    small = Predictor(models_dir, "supervised", device="cpu", max_bytes=limit)
    assert small.max_bytes == limit
    for path, what in ((npy, ".npy file"), (wav, "audio file")):
        with pytest.raises(InputError, match="^" + re.escape(
                f"{what} is too large: {path} has {path.stat().st_size} bytes, the limit is {limit} bytes "
                "(raise max_bytes to accept it)") + "$"):
            small.predict(path)
    unlimited = Predictor(models_dir, "supervised", device="cpu", max_bytes=None)
    assert unlimited.predict(npy).vertices.shape == (53215, 3)
    assert Predictor(models_dir, "supervised", device="cpu").max_bytes == 200 * 1024 * 1024
    for bad in (0, -5, 1.5, True):
        with pytest.raises(InputError, match="^" + re.escape(f"max_bytes must be a positive integer or None, got {bad!r}") + "$"):
            Predictor(models_dir, "supervised", device="cpu", max_bytes=bad)


def test_absurd_feature_values_are_refused(supervised):
    x = fbank()
    x[0, 0] = 3e38
    with pytest.raises(InputError, match="^" + re.escape(
            "fbank: value 3e+38 at frame 0, filter 0 is not a normalised fbank value: features normalised per filter "
            "over 1000 frames stay within +-63.2 (2 x sqrt(frames - 1)); give the release's normalised features, or audio") + "$"):
        supervised.predict(x)
    # the largest accepted values give a finite mesh
    edge = np.where(fbank() > 0, 63.2, -63.2).astype(np.float32)
    assert np.isfinite(supervised.predict(edge).vertices).all()


@pytest.mark.parametrize("stage, patch", [
    ("encoder", "embed"), ("decoder", "decode"), ("voice2mesh", "voice_to_mesh")])
def test_non_finite_network_output_raises_model_error_naming_the_stage(models_dir, monkeypatch, stage, patch):
    p = Predictor(models_dir, "supervised", device="cpu", frontend="fused" if stage == "voice2mesh" else "numpy",
                  vad=False)
    real = getattr(p, patch)

    def poisoned(*args):
        out = real(*args)
        if patch == "embed":
            out[0, 3] = np.nan
        elif patch == "decode":
            out["vertices"][0, 10, 1] = np.inf
        else:
            out[0]["params"][2] = np.nan
        return out

    monkeypatch.setattr(p, patch, poisoned)
    name = {"encoder": "embedding", "decoder": "vertices", "voice2mesh": "params"}[stage]
    from runtime.demo_signal import demo_voice
    source = (demo_voice(2.0), 16000) if stage == "voice2mesh" else (fbank(), None)
    with pytest.raises(ModelError, match="^" + re.escape(
            f"the {stage} network produced NaN or infinite values in its output '{name}' for input 0; the input "
            "passed every check, so the model files are suspect (rebuild or re-export them)") + "$"):
        p.predict(*source)


NO_SIGNAL = ("no signal in the audio: all {n} samples are {v}; features are normalised per mel filter by its spread "
             "over time, so every filter's log-mel must vary (standard deviation over frames at least 0.01): digital "
             "silence, a constant (DC) level or a steady tone carry no voice")


@pytest.fixture(scope="module")
def fused(models_dir) -> Predictor:
    return Predictor(models_dir, "unsupervised", device="cpu", frontend="fused", vad=False)


@pytest.mark.parametrize("value", [0, 1000, -32768])
def test_both_frontends_refuse_silence_and_dc_with_one_message(models_dir, fused, value):
    numpy_frontend = Predictor(models_dir, "unsupervised", device="cpu", vad=False)
    x = np.full(32000, value, np.int16)
    for p in (numpy_frontend, fused):
        with pytest.raises(InputError, match="^" + re.escape(NO_SIGNAL.format(n=32000, v=value)) + "$"):
            p.predict(x, sample_rate=16000)
    with pytest.raises(InputError, match="^" + re.escape(NO_SIGNAL.format(n=32000, v=value)) + "$"):
        from runtime.demo_signal import demo_voice
        fused.predict_batch([demo_voice(2.0), x], sample_rate=16000)


@requires(WAVS, "the real speech recordings")
def test_both_frontends_accept_every_real_recording_without_vad(models_dir, fused):
    numpy_frontend = Predictor(models_dir, "unsupervised", device="cpu", vad=False)
    for wav in WAVS:
        a, b = numpy_frontend.predict(wav), fused.predict(wav)
        np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-5)
        assert a.warnings == b.warnings == []


def test_truncated_wav_warns_and_is_recorded(supervised, tmp_path):
    import soundfile as sf

    from runtime.demo_signal import demo_voice
    from runtime.errors import InputWarning

    full = tmp_path / "full.wav"
    sf.write(full, demo_voice(4.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:-16001])
    message = (f"truncated WAV file: {cut} declares 128000 bytes of audio data but 111999 are present; using the "
               "55999 complete frames (3.500 s) that are there")
    with pytest.warns(InputWarning) as caught:
        r = supervised.predict(cut)
    assert [str(w.message) for w in caught] == [message]
    assert r.warnings == [message]
    assert supervised.predict(full).warnings == []


@pytest.mark.parametrize("seconds", [0.05, 0.2, 0.5])
def test_speech_too_short_for_one_encoder_window_is_refused(supervised, seconds):
    from runtime.demo_signal import demo_voice

    n = int(seconds * 16000)
    frames = n // 160 + 1
    with pytest.raises(InputError) as err:
        supervised.predict(demo_voice(1.0)[:n], sample_rate=16000, vad=False)
    assert str(err.value) == (f"{(frames - 1) / 100:.2f} s of speech ({frames} frames) is too short: the "
                              "encoder needs at least 63 frames (0.62 s) to see one window; give a few seconds of "
                              "voice")


def test_short_speech_is_predicted_with_a_warning(supervised, unsupervised):
    from runtime.demo_signal import demo_voice
    from runtime.errors import InputWarning

    note = ("only 1.0 s of speech: the model was made for utterances of several seconds; below 2 s the face says "
            "little about the voice")
    for p in (supervised, unsupervised):
        with pytest.warns(InputWarning) as caught:
            r = p.predict(demo_voice(2.0)[:16000], sample_rate=16000, vad=False)
        assert [str(w.message) for w in caught] == [note] and r.warnings == [note]
    fbank = np.random.default_rng(0).standard_normal((150, 64)).astype(np.float32)
    with pytest.warns(InputWarning, match="^only 1.5 s of features: the model was made"):  # 149 frames
        supervised.predict(fbank)


def test_big_endian_audio_arrays(supervised):
    from runtime.demo_signal import demo_voice

    x = demo_voice(2.0)
    a = supervised.predict(x, sample_rate=16000)
    b = supervised.predict(x.astype(">i2"), sample_rate=16000)
    c = supervised.predict(x.astype(">i4") * 65536, sample_rate=16000)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.vertices, c.vertices)


def test_missing_precision_and_bad_backend_are_clear_errors(models_dir, tmp_path):
    # A folder with the FP32 files only (links), whatever other tests added to the shared one.
    folder = tmp_path / "fp32-only"
    folder.mkdir()
    for name in ("models.json", "triangles.npy", "encoder.onnx", "decoder_supervised.onnx"):
        (folder / name).symlink_to(models_dir / name)
    with pytest.raises(ModelError) as err:
        Predictor(folder, "supervised", device="cpu", precision="int8")
    assert str(err.value) == (f"{folder} has no int8 models (encoder_int8.onnx, decoder_supervised_int8.onnx not "
                              f"found); make them with: cmp-face calibrate --models {folder} --audio SPEECH_DIR")
    with pytest.raises(ModelError, match=re.escape("unknown precision 'fp8': choose one of fp32, fp16, int8")):
        Predictor(folder, "supervised", device="cpu", precision="fp8")
    with pytest.raises(ModelError, match=re.escape("unknown backend 'tvm': choose one of auto, onnxruntime, "
                                                   "onnxruntime-trt, tensorrt")):
        Predictor(folder, "supervised", backend="tvm")
    with Predictor(folder, "supervised", device="cpu", backend="onnxruntime") as p:
        assert p.models.describe() == "onnxruntime on cpu, fp32"
        assert p.predict(np.zeros((1000, 64), np.float32) + np.linspace(-1, 1, 1000, dtype=np.float32)[:, None]
                         ).vertices.shape == (53215, 3)
    with pytest.raises(ModelError, match="runner is closed"):
        p.predict(np.zeros((1000, 64), np.float32) + np.linspace(-1, 1, 1000, dtype=np.float32)[:, None])


def test_precision_files_come_from_the_manifest(models_dir, tmp_path):
    """Calibration may leave a graph in FP32 (models.json then points INT8 at the FP32 file), and on
    the CPU the uint8-activation flavour is preferred where one was written."""
    from runtime.models_folder import ModelsFolder

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("triangles.npy", "encoder.onnx", "decoder_supervised.onnx"):
        (folder / name).symlink_to(models_dir / name)
    (folder / "encoder_int8u8.onnx").symlink_to(models_dir / "encoder.onnx")  # stand-ins: same graph
    (folder / "encoder_int8.onnx").symlink_to(models_dir / "encoder.onnx")
    manifest = json.loads((models_dir / "models.json").read_text())
    manifest["precisions"] = {
        "int8": {"graphs": {"encoder": {"file": "encoder_int8.onnx"},
                            "decoder_supervised": {"file": "decoder_supervised.onnx"}}},
        "int8u8": {"graphs": {"encoder": {"file": "encoder_int8u8.onnx"}}}}
    (folder / "models.json").write_text(json.dumps(manifest))
    listed = ModelsFolder.read(folder)
    assert listed.precision_file("encoder", "int8") == "encoder_int8.onnx"
    assert listed.precision_file("encoder", "int8", cpu=True) == "encoder_int8u8.onnx"
    assert listed.precision_file("decoder_supervised", "int8", cpu=True) == "decoder_supervised.onnx"
    assert listed.precision_file("encoder", "fp16") == "encoder_fp16.onnx"  # not listed: by name
    assert listed.precision_file("frontend", "int8") == "frontend.onnx"  # the log-mel graph is FP32 in every precision
    p = Predictor(folder, "supervised", device="cpu", precision="int8")
    assert p.models.encoder.path.name == "encoder_int8u8.onnx"
    assert p.models.decoder.path.name == "decoder_supervised.onnx"

    # Made from an earlier encoder.onnx than the folder's own (the FP32 models were exported again
    # since): refused by name, never run with the old weights.
    manifest["precisions"]["int8u8"]["graphs"]["encoder"] |= {"from": "encoder.onnx", "from_sha256": "0" * 64}
    (folder / "models.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as err:
        Predictor(folder, "supervised", device="cpu", precision="int8")
    assert str(err.value) == (
        "encoder_int8u8.onnx (int8u8) was made from an earlier encoder.onnx than the one this models folder now "
        "holds (exported again since); make the int8 models again: cmp-face calibrate --models MODELS --audio SPEECH_DIR")
    current = manifest["files"]["encoder.onnx"]
    manifest["precisions"]["int8u8"]["graphs"]["encoder"]["from_sha256"] = current["sha256"]
    (folder / "models.json").write_text(json.dumps(manifest))
    assert ModelsFolder.read(folder).precision_file("encoder", "int8", cpu=True) == "encoder_int8u8.onnx"


@pytest.mark.parametrize("pipeline", ["supervised", "unsupervised"])
def test_every_vertex_of_a_default_prediction_is_drawn_inside_the_image(models_dir, pipeline):
    """The README's snippet (the demo voice, the synthetic models): nothing of the face falls outside
    render() or render(size=512). The unsupervised mesh is placed by the pose the network predicts
    around the 3DMM's mean pose, which puts the mean face in the middle of the 120 x 120 frame."""
    from runtime.demo_signal import demo_voice

    result = Predictor(models_dir, pipeline, device="cpu").predict(demo_voice(), sample_rate=16000)
    for size in (None, 512):
        side = (512 if pipeline == "supervised" else 120) if size is None else size
        v = result.image_vertices(size)
        assert v[:, :2].min() >= 0 and v[:, :2].max() <= side - 1, (size, v.min(0), v.max(0))
        image = result.render(size)
        assert image.shape[:2] == (side, side)
