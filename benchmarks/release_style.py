"""The release-style baseline: the research release's computation written the way the
release writes it (``shared/docs/ORIGINAL.md``), for the comparison a user would make.

* audio: the release takes mono 16 kHz 16-bit PCM only; read with the standard library's
  ``wave`` module (no resampling exists in the release);
* VAD: :func:`runtime.vad.remove_silence`, which already *is* the release's webrtcvad
  collector (same calls, same order). The release additionally writes the VAD output to
  a ``tmp/`` WAV file and reads it back; that file round trip is NOT timed here, so the
  baseline is, if anything, flattered;
* log-mel: :class:`SphinxMFCC`, the release's ``mfcc.py`` way: the filterbank built with
  Python loops when the extractor is made (one extractor per utterance), then
  ``sig2logspec``: a Python loop over frames, ``numpy.resize`` fill, per-frame
  pre-emphasis with ``prior``, Hamming window, ``rfft`` of 1024, power, filterbank dot,
  ``log(clip(1e-5))``; then ``get_fbank``'s normalisation and tiling to 1000 frames;
* networks: PyTorch eager modules of :mod:`export.models` loaded from the release-layout
  folder with :func:`export.checkpoints.load_release` (faithful re-implementations of the
  release's modules, same keys), under ``torch.no_grad()``; the encoder's time average
  is ``F.avg_pool1d`` and the 120x120 upsampling ``F.interpolate(align_corners=True)``,
  as in the release;
* 3DMM reconstruction and pose alignment: numpy float32 ``u + w_shp @ shape + w_exp @ exp``
  as the release (not inside a network);
* rendering: numpy lighting (:func:`Sim3DR.reference.light_colors_reference`, the release's
  vectorised numpy formulas, normals from the C++ ``get_normal`` as the release's Cython one)
  and :func:`Sim3DR.reference.rasterize_baseline`, the plain single-threaded C++ loop.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from runtime.vad import remove_silence

__all__ = ["SphinxMFCC", "get_fbank", "read_wave", "ReleaseStyle", "remove_silence"]


# --------------------------------------------------------------------------- audio
def read_wave(path: str | Path) -> np.ndarray:
    """The release's input contract: mono 16 kHz 16-bit PCM, read with ``wave``."""
    with wave.open(str(path), "rb") as wf:
        if wf.getnchannels() != 1 or wf.getsampwidth() != 2 or wf.getframerate() != 16000:
            raise ValueError(f"{path}: the release reads mono 16 kHz 16-bit PCM only")
        pcm = wf.readframes(wf.getnframes())
    return np.frombuffer(pcm, dtype="<i2")


# --------------------------------------------------------------------------- log-mel
def _mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _melinv(m):
    return 700.0 * (np.power(10.0, m / 2595.0) - 1.0)


class SphinxMFCC:
    """The release's Sphinx-style extractor (``mfcc.py``), per-frame Python loop."""

    def __init__(self, nfilt: int = 64, nfft: int = 1024, lowerf: float = 20.0, upperf: float = 7200.0,
                 alpha: float = 0.97, samprate: int = 16000, frate: int = 100, wlen: float = 0.025) -> None:
        self.lowerf, self.upperf, self.nfft, self.nfilt = lowerf, upperf, nfft, nfilt
        self.alpha = alpha
        self.samprate = samprate
        self.fshift = float(samprate) / frate
        self.wlen = int(wlen * samprate)
        self.win = np.hamming(self.wlen)
        self.prior = 0
        # Filterbank, built with loops (66 mel-spaced edges, Python round).
        self.filters = np.zeros((nfft // 2 + 1, nfilt), "d")
        dfreq = float(samprate) / nfft
        melmax, melmin = _mel(upperf), _mel(lowerf)
        dmelbw = (melmax - melmin) / (nfilt + 1)
        filt_edge = _melinv(melmin + dmelbw * np.arange(nfilt + 2, dtype="d"))
        for whichfilt in range(nfilt):
            leftfr = int(round(float(filt_edge[whichfilt] / dfreq)))
            centerfr = int(round(float(filt_edge[whichfilt + 1] / dfreq)))
            rightfr = int(round(float(filt_edge[whichfilt + 2] / dfreq)))
            fwidth = (rightfr - leftfr) * dfreq
            height = 2.0 / fwidth
            leftslope = height / (centerfr - leftfr) if centerfr != leftfr else 0
            freq = leftfr + 1
            while freq < centerfr:
                self.filters[freq, whichfilt] = (freq - leftfr) * leftslope
                freq += 1
            if freq == centerfr:
                self.filters[freq, whichfilt] = height
                freq += 1
            rightslope = height / (centerfr - rightfr) if centerfr != rightfr else 0
            while freq < rightfr:
                self.filters[freq, whichfilt] = (freq - rightfr) * rightslope
                freq += 1

    def sig2logspec(self, sig: np.ndarray) -> np.ndarray:
        nfr = int(len(sig) / self.fshift + 1)
        spec = np.zeros((nfr, self.nfilt), "d")
        fr = 0
        while fr < nfr:
            start = int(round(fr * self.fshift))
            end = min(len(sig), start + self.wlen)
            frame = sig[start:end]
            if len(frame) < self.wlen:
                frame = np.resize(frame, self.wlen)
                frame[self.wlen:] = 0
            spec[fr] = self.frame2logspec(frame)
            fr = fr + 1
        return spec

    def pre_emphasis(self, frame: np.ndarray) -> np.ndarray:
        outfr = np.append(frame[0] - self.alpha * self.prior, frame[1:] - self.alpha * frame[:-1])
        self.prior = frame[-1]
        return outfr

    def frame2logspec(self, frame: np.ndarray) -> np.ndarray:
        frame = self.pre_emphasis(frame) * self.win
        fft = np.fft.rfft(frame, self.nfft)
        power = fft.real * fft.real + fft.imag * fft.imag
        return np.log(np.dot(power, self.filters).clip(1e-5, np.inf))


def get_fbank(voice: np.ndarray) -> np.ndarray:
    """The release's ``get_fbank``: a fresh extractor, log-mel, normalise, tile to 1000."""
    mfc = SphinxMFCC()
    fbank = mfc.sig2logspec(voice).astype("float32")
    fbank = fbank - fbank.mean(axis=0)
    fbank = fbank / (fbank.std(axis=0) + np.finfo(np.float32).eps)
    full_frame_number = 1000
    init_frame_number = fbank.shape[0]
    if init_frame_number < full_frame_number:
        while fbank.shape[0] < full_frame_number:
            fbank = np.append(fbank, fbank[0:init_frame_number], axis=0)
        fbank = fbank[0:full_frame_number, :]
    return fbank


# --------------------------------------------------------------------------- models
class ReleaseStyle:
    """Eager PyTorch models of one release-layout folder, run the release's way."""

    def __init__(self, pack: str | Path) -> None:
        import torch

        from export.checkpoints import load_release

        self.torch = torch
        sup = load_release(pack, "supervised")
        unsup = load_release(pack, "unsupervised")
        self.encoder = sup.encoder.eval()
        self.heads = sup.decoder.heads.eval()
        self.generator = unsup.decoder.generator.eval()
        self.image3d = unsup.decoder.image3d.eval()
        self.pose_net = unsup.decoder.pose_net.eval()
        self.triangles = np.ascontiguousarray(sup.triangles, dtype=np.int32)
        mm = sup.decoder.morphable
        self.u = mm.u.numpy().astype(np.float32)                # (3N, 1)
        self.w_shp = mm.w_shp.numpy().astype(np.float32)        # (3N, 40)
        self.w_exp = mm.w_exp.numpy().astype(np.float32)        # (3N, 10)
        self.param_mean = mm.param_mean.numpy().astype(np.float32)
        self.param_std = mm.param_std.numpy().astype(np.float32)

    # ---- networks (torch eager)
    def embed(self, fbanks: np.ndarray):
        """(B, T, 64) float32 -> (B, 64, 1, 1) torch tensor, L2-normalised (release's caller)."""
        torch, F = self.torch, self.torch.nn.functional
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(fbanks.transpose(0, 2, 1)))
            x = self.encoder.model(x)
            x = F.avg_pool1d(x, x.size()[2], stride=1)
            x = x.view(x.size()[0], -1, 1, 1)
            return F.normalize(x, p=2, dim=1)

    def supervised_params(self, emb) -> np.ndarray:
        with self.torch.no_grad():
            return self.heads(emb.view(emb.size(0), -1)).numpy()

    def unsupervised_outputs(self, emb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (B,3,120,120), image3D out (B,102), pose-net out (B,102))."""
        torch, F = self.torch, self.torch.nn.functional
        with torch.no_grad():
            img = self.generator(emb)
            img = F.interpolate(img, size=(120, 120), mode="bilinear", align_corners=True)
            out = self.image3d(img)
            pose = self.pose_net(img)
        return img.numpy(), out.numpy(), pose.numpy()

    # ---- 3DMM (numpy, float32)
    def reconstruct(self, shape: np.ndarray, exp: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(B, 40), (B, 10), (B,) -> (B, 3, N): ``scale * (u + w_shp @ shape + w_exp @ exp)``."""
        flat = self.u + self.w_shp @ shape.T.astype(np.float32) + self.w_exp @ exp.T.astype(np.float32)
        b = flat.shape[1]
        return scale.astype(np.float32)[:, None, None] * flat.T.reshape(b, -1, 3).transpose(0, 2, 1)

    def mesh_supervised(self, p: np.ndarray) -> np.ndarray:
        """(B, 51) -> (B, 3, N) frontal scaled mesh (eval_sup.py)."""
        s = p[:, 0] * np.float32(1.538597731841497e-05) + np.float32(0.0005920184194110334)
        q = p[:, 1:51] * self.param_std[12:62] + self.param_mean[12:62]
        return self.reconstruct(q[:, 0:40], q[:, 40:50], s)

    def mesh_unsupervised(self, out: np.ndarray, pose_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> aligned (B, 3, N) in 120x120 image coordinates (y = 127 - y), frontal (B, 3, N)."""
        p = out * self.param_std + self.param_mean
        P = p[:, 0:12].reshape(-1, 3, 4)
        s = (np.linalg.norm(P[:, 0, 0:3], axis=1) + np.linalg.norm(P[:, 1, 0:3], axis=1)) / 2
        frontal = self.reconstruct(p[:, 12:52], p[:, 52:62], s)
        q = (pose_out[:, 0:12] * self.param_std[0:12] + self.param_mean[0:12]).reshape(-1, 3, 4)
        R = q[:, :, 0:3] / np.linalg.norm(q[:, :, 0:3], axis=2, keepdims=True)
        aligned = R @ frontal + q[:, :, 3:4]
        aligned[:, 1, :] = 127 - aligned[:, 1, :]
        return aligned, frontal

    # ---- whole pipelines
    def voice2mesh_supervised(self, samples_int16: np.ndarray) -> np.ndarray:
        fb = get_fbank(remove_silence(samples_int16))
        return self.mesh_supervised(self.supervised_params(self.embed(fb[None])))[0]

    def voice2mesh_unsupervised(self, samples_int16: np.ndarray):
        fb = get_fbank(remove_silence(samples_int16))
        img, out, pose = self.unsupervised_outputs(self.embed(fb[None]))
        aligned, _ = self.mesh_unsupervised(out, pose)
        return img[0], aligned[0]


# --------------------------------------------------------------------------- rendering
def display_image(img_chw: np.ndarray) -> np.ndarray:
    """The release's display image: clamp, * 127.5 + 128, uint8, RGB -> BGR, HWC."""
    x = np.clip(img_chw, -1, 1) * np.float32(127.5) + np.float32(128.0)
    return np.ascontiguousarray(x.astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1])


def numpy_light(v: np.ndarray, triangles: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The release's per-vertex lighting in numpy (normals from the C++ ``get_normal``, as the
    release's Cython ``get_normal``): ``Sim3DR.reference.light_colors_reference``; on older
    trees, where ``Sim3DR.lighting.light_colors`` itself was that numpy code, that one."""
    try:
        from Sim3DR.reference import light_colors_reference
    except ImportError:
        from Sim3DR.lighting import light_colors as light_colors_reference
    return light_colors_reference(v, triangles, normals=normals)


def render_lit_baseline(vertices_n3: np.ndarray, triangles: np.ndarray, background: np.ndarray) -> np.ndarray:
    """numpy lighting + the plain single-threaded C++ rasteriser, over a copy of ``background``."""
    import Sim3DR
    from Sim3DR.reference import rasterize_baseline

    v = np.ascontiguousarray(vertices_n3, dtype=np.float32)
    colors = numpy_light(v, triangles, Sim3DR.get_normal(v, triangles))
    image = np.array(background, dtype=np.uint8, order="C", copy=True)
    return rasterize_baseline(v, triangles, colors, image, alpha=1.0)


def frontal_to_image(vertices_n3: np.ndarray, size: int, margin: float = 0.05) -> np.ndarray:
    """The same scene as :func:`runtime.render.render_frontal` (y flipped, bounding box
    centred and scaled into ``size``), written out in numpy."""
    v = vertices_n3.astype(np.float64)
    v[:, 1] = -v[:, 1]
    lo, hi = v.min(axis=0), v.max(axis=0)
    scale = (size - 1) * (1.0 - 2.0 * margin) / max(hi[0] - lo[0], hi[1] - lo[1])
    out = np.empty_like(v)
    out[:, :2] = (v[:, :2] - (lo[:2] + hi[:2]) / 2.0) * scale + (size - 1) / 2.0
    out[:, 2] = (v[:, 2] - lo[2]) * scale
    return out.astype(np.float32)


def render_frontal_baseline(vertices_n3: np.ndarray, triangles: np.ndarray, size: int = 512) -> np.ndarray:
    bg = np.full((size, size, 3), 48, np.uint8)
    return render_lit_baseline(frontal_to_image(vertices_n3, size), triangles, bg)
