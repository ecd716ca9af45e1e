"""Release-folder loading: checkpoints written by other code than ours, and every refusal."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.io import savemat  # noqa: E402

from export.checkpoints import load_release  # noqa: E402
from export.onnx_export import export_release  # noqa: E402
from runtime.errors import CheckpointError  # noqa: E402
from tests.helpers.release_writer import N_VERTICES, write_foreign_release  # noqa: E402

@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    return write_foreign_release(tmp_path_factory.mktemp("foreign") / "release")


@pytest.fixture()
def broken(foreign, tmp_path) -> Path:
    """A writable copy of the foreign folder to damage."""
    return Path(shutil.copytree(foreign, tmp_path / "release"))


@pytest.mark.slow
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
