"""PyTorch models of the Cross-Modal Perceptionist release, with the release's state-dict keys.

Everything here follows ``shared/docs/ORIGINAL.md`` section 2. Module and attribute names are
chosen so that ``state_dict()`` keys are identical to the release files; the forward passes are
written so that they export to ONNX with dynamic batch and time axes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 64
N_VERTICES = 53215
N_PARAMS_SUPERVISED = 51      # scale 1 + shape 40 + expression 10
N_PARAMS_UNSUPERVISED = 102   # pose 12 + shape 40 + expression 10 + texture 40
IMAGE_SIZE = 120

# Supervised decoder: scale = p[0] * SCALE_STD + SCALE_MEAN (release constants, eval_sup.py).
SCALE_STD = 1.538597731841497e-05
SCALE_MEAN = 0.0005920184194110334


class VoiceEmbedNet(nn.Module):
    """Voice encoder: fbank (B, 64, T) -> L2-normalised embedding (B, 64)."""

    def __init__(self) -> None:
        super().__init__()
        channels = [64, 256, 384, 576, 864]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv1d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.Conv1d(channels[-1], EMBED_DIM, 3, 2, 1, bias=True))
        self.model = nn.Sequential(*layers)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.model(fbank)
        # The release averages over the whole time axis (avg_pool1d with kernel = T); a mean is
        # the same sum divided by T and, unlike a data-dependent kernel, exports with dynamic T.
        x = x.mean(dim=2)
        # The caller in the release normalises (F.normalize, eps 1e-12); both decoders take this.
        return F.normalize(x, p=2.0, dim=1, eps=1e-12)


class SupervisedHeads(nn.Module):
    """``Generator1D_directMLP``: three linear heads on the embedding -> 51 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier_scale = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMBED_DIM, 1))
        self.classifier_shape = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMBED_DIM, 40))
        self.classifier_exp = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMBED_DIM, 10))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.classifier_scale(embedding), self.classifier_shape(embedding),
                          self.classifier_exp(embedding)], dim=1)


class FaceGenerator(nn.Module):
    """Unsupervised generator: embedding (B, 64, 1, 1) -> image (B, 3, 64, 64)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(64, 1024, 4, 1, 0), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(1024, 512, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 3, 1, 1, 0),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.model(embedding)


# ---------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision layout) with the four 3DMM heads of SynergyNet's backbone.

def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expand))
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(c_in, hidden, 1, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion t, channels c, repeats n, first stride s)
MOBILENET_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
LAST_CHANNEL = 1280
HEADS = (("classifier_ori", 12), ("classifier_shape", 40), ("classifier_exp", 10),
         ("classifier_texture", 40))


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) -> 102 values: ori 12, shape 40, exp 10, texture 40.

    With ``split_aliases`` the module also registers ``features_first`` (features[0:9]) and
    ``features_second`` (features[9:]) as the release's ``image3D`` does: the same layers under
    a second name, so the state dict carries every feature tensor twice.
    """

    def __init__(self, split_aliases: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        c_in = 32
        for t, c, n, s in MOBILENET_V2_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers.append(_conv_bn(c_in, LAST_CHANNEL, 1, 1))
        self.features = nn.Sequential(*layers)
        if split_aliases:
            self.features_first = self.features[:9]
            self.features_second = self.features[9:]
        for name, n_out in HEADS:
            setattr(self, name, nn.Sequential(nn.Dropout(0.2), nn.Linear(LAST_CHANNEL, n_out)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.features(image)
        x = x.mean(dim=(2, 3))  # global average pooling
        return torch.cat([getattr(self, name)(x) for name, _ in HEADS], dim=1)


class Image3D(nn.Module):
    """The release's ``image3D`` network: keys ``backbone.*`` with the split aliases (632 keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MobileNetV2(split_aliases=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)


# ---------------------------------------------------------------------------------------------
# 3DMM reconstruction and the two complete decoders.

def align_corners_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PyTorch's bilinear ``align_corners=True`` interpolation.

    Built with PyTorch's own float32 coordinate arithmetic (``scale = (in-1)/(out-1)`` and
    ``scale * i`` in float32), so ``A @ x @ A.T`` reproduces ``F.interpolate`` to rounding.
    ONNX ``Resize`` computes its coordinates differently (1e-5 apart on our images), and the
    untrained image3D network amplifies that forty-fold; two constant MatMuls avoid it and suit
    TensorRT.
    """
    scale = torch.tensor(n_in - 1, dtype=torch.float32) / torch.tensor(n_out - 1, dtype=torch.float32)
    pos = scale * torch.arange(n_out, dtype=torch.float32)
    lo = pos.long()
    w1 = pos - lo.float()
    hi = torch.clamp(lo + 1, max=n_in - 1)
    matrix = torch.zeros(n_out, n_in)
    rows = torch.arange(n_out)
    matrix.index_put_((rows, lo), 1 - w1, accumulate=True)
    matrix.index_put_((rows, hi), w1, accumulate=True)
    return matrix


class AlignCornersUpsample(nn.Module):
    """Bilinear resize of (B, C, n_in, n_in) to (B, C, n_out, n_out), ``align_corners=True``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.register_buffer("matrix", align_corners_matrix(n_in, n_out), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix @ x @ self.matrix.t()


class Morphable(nn.Module):
    """The 3DMM tensors of ``2D-to-3D-pretrained.tar`` as buffers.

    ``u`` (3N, 1), ``w_shp`` (3N, 40), ``w_exp`` (3N, 10), ``param_mean`` / ``param_std`` (102).
    """

    def __init__(self, u: torch.Tensor, w_shp: torch.Tensor, w_exp: torch.Tensor,
                 param_mean: torch.Tensor, param_std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("u", u.detach().float().reshape(-1, 1).clone())
        self.register_buffer("w_shp", w_shp.detach().float().clone())
        self.register_buffer("w_exp", w_exp.detach().float().clone())
        self.register_buffer("param_mean", param_mean.detach().float().reshape(-1).clone())
        self.register_buffer("param_std", param_std.detach().float().reshape(-1).clone())

    @property
    def n_vertices(self) -> int:
        return self.u.shape[0] // 3

    def vertices(self, scale: torch.Tensor, shape: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """``scale * (u + w_shp @ shape + w_exp @ exp)`` -> (B, N, 3), xyz interleaved."""
        flat = self.u.t() + shape @ self.w_shp.t() + exp @ self.w_exp.t()   # (B, 3N)
        return (scale.reshape(-1, 1) * flat).reshape(flat.shape[0], -1, 3)


class SupervisedDecoder(nn.Module):
    """embedding (B, 64) -> params (B, 51), vertices (B, N, 3): frontal, scaled, no pose."""

    def __init__(self, morphable: Morphable) -> None:
        super().__init__()
        self.heads = SupervisedHeads()
        self.morphable = morphable

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.heads(embedding)
        mm = self.morphable
        scale = p[:, 0] * SCALE_STD + SCALE_MEAN
        q = p[:, 1:51] * mm.param_std[12:62] + mm.param_mean[12:62]
        return p, mm.vertices(scale, q[:, 0:40], q[:, 40:50])


def rows_normalised(m: torch.Tensor) -> torch.Tensor:
    """Each row of the (B, 3, 3) matrices divided by its L2 norm (no epsilon, as the release)."""
    return m / torch.sqrt((m * m).sum(dim=2, keepdim=True))


class UnsupervisedDecoder(nn.Module):
    """embedding (B, 64) -> image, params, pose and the aligned mesh (demo.py).

    Outputs: ``image`` (B, 3, 120, 120) upsampled generator output (unclamped, RGB),
    ``params`` (B, 102) raw image3D output, ``pose_R`` (B, 3, 3), ``pose_offset`` (B, 3),
    ``vertices`` (B, N, 3) aligned in 120x120 image coordinates (y = 127 - y),
    ``vertices_frontal`` (B, N, 3) scaled frontal mesh (used by the release's mesh analysis).
    """

    def __init__(self, morphable: Morphable) -> None:
        super().__init__()
        self.generator = FaceGenerator()
        self.upsample = AlignCornersUpsample(64, IMAGE_SIZE)
        self.image3d = Image3D()
        self.pose_net = MobileNetV2()
        self.morphable = morphable

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mm = self.morphable
        image64 = self.generator(embedding[:, :, None, None])
        image = self.upsample(image64)

        out = self.image3d(image)
        p = out * mm.param_std + mm.param_mean
        pose = p[:, 0:12].reshape(-1, 3, 4)
        scale = (pose[:, 0, 0:3].norm(dim=1) + pose[:, 1, 0:3].norm(dim=1)) / 2
        frontal = mm.vertices(scale, p[:, 12:52], p[:, 52:62])

        pose_out = self.pose_net(image)[:, 0:12] * mm.param_std[0:12] + mm.param_mean[0:12]
        pose_out = pose_out.reshape(-1, 3, 4)
        rotation = rows_normalised(pose_out[:, :, 0:3])
        offset = pose_out[:, :, 3]
        aligned = frontal @ rotation.transpose(1, 2) + offset[:, None, :]
        # The release flips y for its image frame with 127 (a 128-pixel convention) on 120x120.
        aligned = torch.cat([aligned[:, :, 0:1], 127 - aligned[:, :, 1:2], aligned[:, :, 2:3]], dim=2)
        return image, out, rotation, offset, aligned, frontal


UNSUPERVISED_OUTPUTS = ("image", "params", "pose_R", "pose_offset", "vertices", "vertices_frontal")
SUPERVISED_OUTPUTS = ("params", "vertices")
