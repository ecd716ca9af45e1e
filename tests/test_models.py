"""The PyTorch models against ORIGINAL.md section 2, written out independently here."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from tests.helpers.release_writer import mobilenet_keys  # noqa: E402
from export.models import (AlignCornersUpsample, FaceGenerator, Image3D, MobileNetV2,  # noqa: E402
                           Morphable, SupervisedDecoder, SupervisedHeads, UnsupervisedDecoder, VoiceEmbedNet)




def test_encoder_keys_and_shapes():
    state = VoiceEmbedNet().state_dict()
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = []
    for conv, norm in ((0, 1), (3, 4), (6, 7), (9, 10)):
        expected += [f"model.{conv}.weight"] + [f"model.{norm}.{k}" for k in bn]
    expected += ["model.12.weight", "model.12.bias"]
    assert list(state) == expected
    assert [tuple(state[f"model.{i}.weight"].shape) for i in (0, 3, 6, 9, 12)] == [
        (256, 64, 3), (384, 256, 3), (576, 384, 3), (864, 576, 3), (64, 864, 3)]


def test_decoder_keys():
    assert list(SupervisedHeads().state_dict()) == [
        f"classifier_{h}.1.{k}" for h in ("scale", "shape", "exp") for k in ("weight", "bias")]
    gen = FaceGenerator().state_dict()
    assert list(gen) == [f"model.{i}.{k}" for i in (0, 2, 4, 6, 8, 10) for k in ("weight", "bias")]
    assert tuple(gen["model.0.weight"].shape) == (64, 1024, 4, 4)
    assert tuple(gen["model.10.weight"].shape) == (64, 3, 1, 1)


def test_mobilenet_keys_and_image3d_aliases():
    assert sorted(MobileNetV2().state_dict()) == sorted(mobilenet_keys())
    keys = set(Image3D().state_dict())
    assert len(keys) == 632
    canonical = {f"backbone.{k}" for k in mobilenet_keys()}
    first = {f"backbone.{k.replace('features.', 'features_first.', 1)}" for k in mobilenet_keys()
             if k.startswith("features.") and int(k.split(".")[1]) <= 8}
    second = {f"backbone.{k.replace('features.', 'features_second.', 1)}" for k in mobilenet_keys()
              if k.startswith("features.") and int(k.split(".")[1]) >= 9}
    assert keys == canonical | first | second


def test_mobilenet_uses_relu6_and_residuals():
    net = MobileNetV2()
    assert sum(isinstance(m, torch.nn.ReLU6) for m in net.modules()) == 1 + 16 * 2 + 1 + 1
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    residual = [b.use_residual for b in net.features[1:18]]
    assert sum(residual) == 10  # repeats after the first of each stage: 1+2+3+2+2+0


def test_encoder_mean_equals_release_avg_pool_and_normalize():
    torch.manual_seed(0)
    enc = VoiceEmbedNet().eval()
    x = torch.randn(2, 64, 999)
    with torch.no_grad():
        h = enc.model(x)
        release = F.normalize(F.avg_pool1d(h, h.size(2), stride=1).view(2, -1, 1, 1), dim=1).view(2, 64)
        ours = enc(x)
    np.testing.assert_allclose(ours.numpy(), release.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours.numpy(), axis=1), 1.0, atol=1e-6)


def test_upsample_matches_pytorch_bilinear_align_corners():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 64) * 2
    ours = AlignCornersUpsample(64, 120)(x)
    ref = F.interpolate(x, size=(120, 120), mode="bilinear", align_corners=True)
    # Same weights as PyTorch's float32 kernel; only the summation order differs.
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=5e-6, rtol=0)


def random_morphable(n_vertices: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n3 = 3 * n_vertices
    return {"u": torch.randn(n3, 1, generator=g) * 1e4, "w_shp": torch.randn(n3, 40, generator=g) * 1e-2,
            "w_exp": torch.randn(n3, 10, generator=g) * 1e3, "param_mean": torch.randn(102, generator=g),
            "param_std": torch.rand(102, generator=g) + 0.5}


def test_supervised_mesh_formula():
    mm = random_morphable()
    dec = SupervisedDecoder(Morphable(**mm)).eval()
    with torch.no_grad():  # a scale output of about +-20 z-scores, so that SCALE_STD weighs in s
        dec.heads.classifier_scale[1].bias.copy_(torch.tensor([20.0]))
    emb = F.normalize(torch.randn(2, 64), dim=1)
    with torch.no_grad():
        params, vertices = dec(emb)
    assert abs(params[:, 0]).min() > 10
    t = {k: v.double().numpy() for k, v in mm.items()}
    for b in range(2):
        p = params[b].double().numpy()
        s = p[0] * 1.538597731841497e-05 + 0.0005920184194110334  # ORIGINAL.md section 2, typed out
        q = p[1:51] * t["param_std"][12:62] + t["param_mean"][12:62]
        flat = s * (t["u"][:, 0] + t["w_shp"] @ q[:40] + t["w_exp"] @ q[40:50])
        expected = flat.reshape(3, -1, order="F").T  # interleaved xyz, as 3DDFA reshapes it
        np.testing.assert_allclose(vertices[b].numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_unsupervised_pose_and_alignment_formula():
    torch.manual_seed(1)
    mm = random_morphable()
    mm["param_mean"][:12] = torch.tensor([6e-4, 1e-5, 0, 60, 0, 6e-4, 0, 70, 0, 0, 6e-4, -65])
    mm["param_std"][:12] = torch.tensor([1e-4] * 3 + [3] + [1e-4] * 3 + [3] + [1e-4] * 3 + [3])
    dec = UnsupervisedDecoder(Morphable(**mm)).eval()
    emb = F.normalize(torch.randn(2, 64), dim=1)
    with torch.no_grad():
        image, out, rot, offset, aligned, frontal = dec(emb)
        ref_image = F.interpolate(dec.generator(emb[:, :, None, None]), size=(120, 120), mode="bilinear",
                                  align_corners=True)
        pose_raw = dec.pose_net(image).double().numpy()
    np.testing.assert_allclose(image.numpy(), ref_image.numpy(), atol=1e-5)
    t = {k: v.double().numpy() for k, v in mm.items()}
    for b in range(2):
        p = out[b].double().numpy() * t["param_std"] + t["param_mean"]
        P = p[:12].reshape(3, 4)
        s = (np.linalg.norm(P[0, :3]) + np.linalg.norm(P[1, :3])) / 2
        v = (s * (t["u"][:, 0] + t["w_shp"] @ p[12:52] + t["w_exp"] @ p[52:62])).reshape(3, -1, order="F")
        Q = (pose_raw[b, :12] * t["param_std"][:12] + t["param_mean"][:12]).reshape(3, 4)
        R = Q[:, :3] / np.linalg.norm(Q[:, :3], axis=1, keepdims=True)
        al = R @ v + Q[:, 3:4]
        al[1] = 127 - al[1]
        np.testing.assert_allclose(frontal[b].numpy(), v.T, rtol=1e-4, atol=1e-4 * np.abs(v).max())
        np.testing.assert_allclose(rot[b].numpy(), R, atol=1e-5)
        np.testing.assert_allclose(offset[b].numpy(), Q[:, 3], rtol=1e-5)
        np.testing.assert_allclose(aligned[b].numpy(), al.T, rtol=1e-4, atol=1e-3)
