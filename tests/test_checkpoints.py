"""Release-folder loading: checkpoints written by other code than ours, and every refusal."""
from __future__ import annotations

import re
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.io import savemat  # noqa: E402

from export.checkpoints import load_release  # noqa: E402
from export.onnx_export import export_release  # noqa: E402
from runtime.errors import CheckpointError  # noqa: E402
from tests.test_models import mobilenet_keys  # noqa: E402

N_VERTICES = 300


def _tensor(rng: np.random.Generator, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1234, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.from_numpy(rng.uniform(0.5, 2.0, shape).astype(np.float32))
    scale = 1.0 if key.endswith(("running_mean", "bias")) and len(shape) == 1 else np.sqrt(2 / max(1, np.prod(shape[1:])))
    return torch.from_numpy((rng.normal(0, 1, shape) * (0.1 if len(shape) == 1 else scale)).astype(np.float32))


def mobilenet_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes for mobilenet_keys(), from the spec's table."""
    shapes, index, c_in = {}, 1, 32
    def conv_bn(prefix, c_out, c_in_g, k):
        shapes[f"{prefix}.0.weight"] = (c_out, c_in_g, k, k)
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.1.{n}"] = (c_out,)
        shapes[f"{prefix}.1.num_batches_tracked"] = ()
    conv_bn("features.0", 32, 3, 3)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for _ in range(n):
            hidden, p = c_in * t, f"features.{index}.conv"
            if t == 1:
                conv_bn(f"{p}.0", hidden, 1, 3)
                proj, bn = f"{p}.1", f"{p}.2"
            else:
                conv_bn(f"{p}.0", hidden, c_in, 1)
                conv_bn(f"{p}.1", hidden, 1, 3)
                proj, bn = f"{p}.2", f"{p}.3"
            shapes[f"{proj}.weight"] = (c, hidden, 1, 1)
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{bn}.{name}"] = (c,)
            shapes[f"{bn}.num_batches_tracked"] = ()
            index, c_in = index + 1, c
    conv_bn("features.18", 1280, 320, 1)
    for head, n in (("ori", 12), ("shape", 40), ("exp", 10), ("texture", 40)):
        shapes[f"classifier_{head}.1.weight"] = (n, 1280)
        shapes[f"classifier_{head}.1.bias"] = (n,)
    assert sorted(shapes) == sorted(mobilenet_keys())
    return shapes


def write_foreign_release(root: Path, seed: int = 0, epoch: str = "7") -> Path:
    """A release-layout folder written from the spec alone: key lists and shapes typed out
    here, tensors from numpy, shared storage for image3D's aliases (as torch.save of the
    release's module produces), extra training-time modules in the .tar."""
    rng = np.random.default_rng(seed)
    models = root / "pretrained_models"
    (models / "supervised_64").mkdir(parents=True)
    (root / "train.configs").mkdir()
    enc = OrderedDict()
    for conv, bn, c_in, c_out in ((0, 1, 64, 256), (3, 4, 256, 384), (6, 7, 384, 576), (9, 10, 576, 864)):
        enc[f"model.{conv}.weight"] = _tensor(rng, "w", (c_out, c_in, 3))
        for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            enc[f"model.{bn}.{n}"] = _tensor(rng, n, (c_out,))
    enc["model.12.weight"] = _tensor(rng, "w", (64, 864, 3))
    enc["model.12.bias"] = _tensor(rng, "bias", (64,))
    torch.save(enc, models / "voice_embedding.pth")

    heads = {f"classifier_{h}.1.{k}": _tensor(rng, k, (n, 64) if k == "weight" else (n,))
             for h, n in (("scale", 1), ("shape", 40), ("exp", 10)) for k in ("weight", "bias")}
    torch.save(heads, models / "supervised_64" / f"generator_{epoch}.pth")
    gen = {}
    for i, (ci, co, k) in zip((0, 2, 4, 6, 8, 10), ((64, 1024, 4), (1024, 512, 4), (512, 256, 4),
                                                    (256, 128, 4), (128, 64, 4), (64, 3, 1))):
        gen[f"model.{i}.weight"] = torch.from_numpy(rng.normal(0, 0.02, (ci, co, k, k)).astype(np.float32))
        gen[f"model.{i}.bias"] = _tensor(rng, "bias", (co,))
    torch.save(gen, models / f"generator_{epoch}.pth")

    shapes = mobilenet_shapes()
    image3d = {f"backbone.{k}": _tensor(rng, k, s) for k, s in shapes.items()}
    for k in list(image3d):
        if k.startswith("backbone.features."):
            i = int(k.split(".")[2])
            alias = "features_first" if i <= 8 else "features_second"
            image3d[k.replace("features.", f"{alias}.", 1)] = image3d[k]  # same storage
    torch.save(image3d, models / f"image3D_{epoch}.pth")

    n3 = 3 * N_VERTICES
    state = {f"module.IGM.backbone.{k}": _tensor(rng, k, s) for k, s in shapes.items()}
    state |= {"module.u": torch.from_numpy(rng.normal(0, 5e4, (n3, 1)).astype(np.float32)),
              "module.w_shp": torch.from_numpy(rng.normal(0, 1e-2, (n3, 40)).astype(np.float32)),
              "module.w_exp": torch.from_numpy(rng.normal(0, 1e3, (n3, 10)).astype(np.float32)),
              "module.param_mean": torch.from_numpy(np.r_[[6e-4, 0, 0, 60, 0, 6e-4, 0, 70, 0, 0, 6e-4, -65],
                                                          rng.normal(0, 1e4, 90)].astype(np.float32)),
              "module.param_std": torch.from_numpy(np.r_[[1e-4, 1e-4, 1e-4, 3] * 3,
                                                         rng.uniform(1e4, 5e5, 40), rng.uniform(0.1, 2, 50)].astype(np.float32)),
              "module.forwardDirection.conv1.weight": torch.zeros(8, 3, 3, 3),
              "module.reverseDirection.fc.bias": torch.zeros(5)}
    torch.save({"state_dict": state}, models / "2D-to-3D-pretrained.tar")
    tri = np.array([[i, i + 1, i + 2] for i in range(0, N_VERTICES - 2)], dtype=np.float64) + 1
    savemat(str(root / "train.configs" / "tri.mat"), {"tri": tri.T})
    return root


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    return write_foreign_release(tmp_path_factory.mktemp("foreign") / "release")


@pytest.fixture()
def broken(foreign, tmp_path) -> Path:
    """A writable copy of the foreign folder to damage."""
    return Path(shutil.copytree(foreign, tmp_path / "release"))


def test_foreign_checkpoints_load_and_export_within_tolerance(foreign, tmp_path):
    for pipeline in ("supervised", "unsupervised"):
        loaded = load_release(foreign, pipeline)
        assert loaded.triangles.shape == (N_VERTICES - 2, 3) and loaded.triangles.dtype == np.int32
        assert loaded.triangles.min() == 0
    manifest = export_release(foreign, tmp_path / "models", ("supervised",), progress=lambda m: None)
    assert manifest["verification"]["max_rel"] <= 1e-4
    # Measured here too, not only by the exporter: ONNX Runtime vs PyTorch float32 differ by
    # summation order alone (~1e-7 relative), a wrong operation by far more than 1e-5.
    import onnxruntime as ort

    loaded = load_release(foreign, "supervised")
    x = torch.randn(2, 64, 300, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        embedding = loaded.encoder(x)
        params, vertices = loaded.decoder(embedding)
    cpu = ["CPUExecutionProvider"]
    got = ort.InferenceSession(str(tmp_path / "models" / "encoder.onnx"), providers=cpu).run(None, {"fbank": x.numpy()})
    decoded = ort.InferenceSession(str(tmp_path / "models" / "decoder_supervised.onnx"), providers=cpu).run(
        ["params", "vertices"], {"embedding": embedding.numpy()})
    for a, b in zip(got + decoded, (embedding, params, vertices)):
        b = b.numpy().astype(np.float64)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    assert manifest["n_vertices"] == N_VERTICES
    assert set(manifest["sources"]) == {"pretrained_models/voice_embedding.pth",
                                        "pretrained_models/2D-to-3D-pretrained.tar",
                                        "train.configs/tri.mat", "pretrained_models/supervised_64/generator_7.pth"}


def test_loaded_weights_are_the_files_weights(foreign):
    loaded = load_release(foreign, "unsupervised")
    saved = torch.load(foreign / "pretrained_models" / "image3D_7.pth", weights_only=True)
    np.testing.assert_array_equal(loaded.decoder.image3d.state_dict()["backbone.features.5.conv.1.0.weight"],
                                  saved["backbone.features.5.conv.1.0.weight"])
    tar = torch.load(foreign / "pretrained_models" / "2D-to-3D-pretrained.tar", weights_only=True)["state_dict"]
    np.testing.assert_array_equal(loaded.decoder.pose_net.state_dict()["classifier_ori.1.weight"],
                                  tar["module.IGM.backbone.classifier_ori.1.weight"])
    np.testing.assert_array_equal(loaded.decoder.morphable.w_exp, tar["module.w_exp"])


def save_modified(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def test_missing_key_is_named(broken):
    path = broken / "pretrained_models" / "voice_embedding.pth"
    save_modified(path, lambda s: s.pop("model.4.running_var"))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} does not match the voice encoder (VoiceEmbedNet): missing keys (1): model.4.running_var")):
        load_release(broken, "supervised")


def test_unexpected_key_is_named(broken):
    path = broken / "pretrained_models" / "supervised_64" / "generator_7.pth"
    save_modified(path, lambda s: s.__setitem__("classifier_age.1.weight", torch.zeros(1, 64)))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} does not match the supervised decoder (Generator1D_directMLP): unexpected keys (1): "
            "classifier_age.1.weight")):
        load_release(broken, "supervised")


def test_shape_mismatch_is_named(broken):
    path = broken / "pretrained_models" / "generator_7.pth"
    save_modified(path, lambda s: s.__setitem__("model.10.weight", torch.zeros(64, 3, 3, 3)))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} does not match the face generator: shape mismatches (1): "
            "model.10.weight: file (64, 3, 3, 3) vs model (64, 3, 1, 1)")):
        load_release(broken, "unsupervised")


def test_dataparallel_prefix_gets_a_hint(broken):
    path = broken / "pretrained_models" / "voice_embedding.pth"
    state = torch.load(path, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(26\).*unexpected keys \(26\).*"
                                              r"saved from nn.DataParallel: strip the 'module.' prefix"):
        load_release(broken, "supervised")


def test_pose_network_key_missing_in_tar(broken):
    path = broken / "pretrained_models" / "2D-to-3D-pretrained.tar"
    save_modified(path, lambda s: s["state_dict"].pop("module.IGM.backbone.classifier_exp.1.bias"))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} does not match the pose MobileNetV2 (key names after 'module.IGM.backbone.'): "
            "missing keys (1): classifier_exp.1.bias")):
        load_release(broken, "unsupervised")


def test_morphable_tensor_missing_or_misshaped(broken):
    path = broken / "pretrained_models" / "2D-to-3D-pretrained.tar"
    save_modified(path, lambda s: s["state_dict"].pop("module.w_exp"))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: missing 3DMM tensors: module.w_exp")):
        load_release(broken, "supervised")
    save_modified(path, lambda s: s["state_dict"].__setitem__("module.w_exp", torch.zeros(3 * N_VERTICES, 9)))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: malformed 3DMM tensors: module.w_exp: ({3 * N_VERTICES}, 9), expected ({3 * N_VERTICES}, 10)")):
        load_release(broken, "supervised")


def test_tar_without_state_dict(broken):
    path = broken / "pretrained_models" / "2D-to-3D-pretrained.tar"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: expected a dict with a 'state_dict' entry, found keys model")):
        load_release(broken, "supervised")


class NotATensor:
    pass


def test_pickled_objects_are_refused_without_running_them(broken):
    path = broken / "pretrained_models" / "voice_embedding.pth"
    torch.save({"model.0.weight": NotATensor()}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: refused to load: the file holds objects "
                                                        "other than plain tensors (weights_only load failed:")):
        load_release(broken, "supervised")


def test_plain_values_that_are_not_tensors(broken):
    path = broken / "pretrained_models" / "voice_embedding.pth"
    save_modified(path, lambda s: s.__setitem__("model.0.weight", [1.0, 2.0]))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: state dict values must be tensors; not tensors: model.0.weight (list)")):
        load_release(broken, "supervised")


def test_not_a_checkpoint_at_all(broken):
    path = broken / "pretrained_models" / "voice_embedding.pth"
    path.write_bytes(b"this is not a zip nor a pickle")
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: ")):
        load_release(broken, "supervised")


def test_nan_weights_are_refused(broken):
    path = broken / "pretrained_models" / "supervised_64" / "generator_7.pth"
    save_modified(path, lambda s: s["classifier_exp.1.bias"].__setitem__(3, float("nan")))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: non-finite values (NaN or inf) in "
                                                        "classifier_exp.1.bias")):
        load_release(broken, "supervised")


def test_inconsistent_aliases_are_refused(broken):
    path = broken / "pretrained_models" / "image3D_7.pth"
    state = torch.load(path, weights_only=True)
    state = {k: v.clone() for k, v in state.items()}  # break the shared storage
    state["backbone.features_first.3.conv.2.weight"] += 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: backbone.features_first.3.conv.2.weight differs from backbone.features.3.conv.2.weight")):
        load_release(broken, "unsupervised")


def test_epoch_discovery(broken):
    models = broken / "pretrained_models"
    shutil.copy(models / "generator_7.pth", models / "generator_9.pth")
    with pytest.raises(CheckpointError, match=re.escape(
            f"{models}: several generator checkpoints (generator_7.pth, generator_9.pth); "
            "choose one with epoch=... (CLI: --epoch)")):
        load_release(broken, "unsupervised")
    with pytest.raises(CheckpointError, match=re.escape(f"missing: {models / 'image3D_9.pth'}")):
        load_release(broken, "unsupervised", epoch=9)
    assert load_release(broken, "unsupervised", epoch=7).folder.files["generator"].name == "generator_7.pth"
    assert load_release(broken, "supervised").folder.files["heads"].name == "generator_7.pth"


def test_incomplete_folder_lists_missing_files(broken):
    (broken / "train.configs" / "tri.mat").unlink()
    (broken / "pretrained_models" / "voice_embedding.pth").unlink()
    with pytest.raises(CheckpointError, match=re.escape(
            f"release folder {broken} is incomplete for the supervised pipeline; missing: "
            f"{broken / 'pretrained_models' / 'voice_embedding.pth'}, {broken / 'train.configs' / 'tri.mat'}")):
        load_release(broken, "supervised")
    with pytest.raises(CheckpointError, match=re.escape(f"{broken / 'nope'}: release folder not found")):
        load_release(broken / "nope", "supervised")


def test_bad_triangles(broken):
    path = broken / "train.configs" / "tri.mat"
    savemat(str(path), {"triangles": np.ones((3, 4))})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: no 'tri' variable (found: triangles)")):
        load_release(broken, "supervised")
    savemat(str(path), {"tri": np.array([[1, 2, N_VERTICES + 1]]).T})
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: triangle index {N_VERTICES + 1} exceeds the {N_VERTICES} vertices of the 3DMM")):
        load_release(broken, "supervised")
    savemat(str(path), {"tri": np.array([[0, 1, 2]]).T})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: 'tri' indices must be 1-based (found 0)")):
        load_release(broken, "supervised")
