"""runtime.metrics against ORIGINAL.md sections 4 and 5: hand-computable meshes, and the synthetic
pack's 53215-vertex mean face stretched by known factors, checked with an independent
implementation written here from the spec (plain Python loops, not the module's numpy)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime import metrics
from runtime.errors import InputError
from tests.helpers.metrics_reference import SPEC_OICD, SPEC_PAIRS, ref_scores

N = 53215
# --------------------------------------------------------------------------- hand-computable meshes

def hand_target() -> np.ndarray:
    """Zeros except the measured vertices, each at a point of its own (so that using any wrong
    vertex index changes a distance): OICD 5 (a 3-4-5 triangle), forehead 10, cheek 12, ear 15,
    midline 7.5 -> ratios 2, 2.4, 3, 1.5. x range -2..12, y range -2..10."""
    v = np.zeros((N, 3))
    v[2217], v[14607] = (1, 1, 1), (4, 5, 1)
    v[1678], v[42117] = (2, 1, 0), (12, 1, 0)
    v[2294], v[13635] = (0, 3, 2), (0, 3, 14)
    v[20636], v[34153] = (-2, -2, 0), (7, 10, 0)
    v[2130], v[15003] = (1, 2, -3), (1, 2, 4.5)
    return v


def test_hand_mesh_ratios_and_measurements():
    t = hand_target()
    assert metrics.oicd(t) == 5.0
    assert metrics.measurements(t) == {"forehead": 10.0, "cheek": 12.0, "ear": 15.0, "midline": 7.5}
    assert metrics.ratios(t) == {"forehead": 2.0, "cheek": 2.4, "ear": 3.0, "midline": 1.5}


def test_hand_mesh_are_is_the_ratio_change_whatever_the_scale():
    t = hand_target()
    pred = t.copy()
    pred[42117] = (13, 1, 0)        # forehead 11 -> ratio 2.2 (error 0.2)
    pred[15003] = (1, 2, 3.5)       # midline 6.5 -> ratio 1.3 (error 0.2)
    pred *= 3.0                     # the OICD scaling removes any overall size
    errors = metrics.ratio_errors(pred, t)
    assert errors == pytest.approx({"forehead": 0.2, "cheek": 0.0, "ear": 0.0, "midline": 0.2}, abs=1e-12)
    scaled = metrics.scale_to_target(pred, t)
    assert metrics.oicd(scaled) == pytest.approx(5.0, rel=1e-15)
    assert metrics.ratio_errors(t, t) == {k: 0.0 for k in SPEC_PAIRS}


def test_hand_mesh_keypoint_error():
    t = hand_target()
    pred = t + np.array([1.0, 2.0, 2.0])          # a translation: OICD and scale unchanged
    keypoints = np.array([3 * 1678, 3 * 1678 + 1, 3 * 1678 + 2])  # x, y, z of one vertex
    # |(1, 2, 2)| = 3; target height 12 (y -2..10), width 14 (x -2..12)
    assert metrics.keypoint_error(pred, t, keypoints) == pytest.approx(3 / math.sqrt(12 * 14), rel=1e-14)
    # Only the listed flattened coordinates count: the y coordinates of two vertices.
    assert metrics.keypoint_error(pred, t, np.array([1, 3 * 5 + 1])) == pytest.approx(
        math.sqrt(2 * 2 ** 2) / math.sqrt(168), rel=1e-14)


def test_hand_mesh_keypoint_error_applies_the_oicd_scaling_first():
    t = hand_target()
    pred = t * 2.0                                # scaled back exactly: no error left
    assert metrics.keypoint_error(pred, t, np.arange(3 * N)) == pytest.approx(0.0, abs=1e-12)


def test_mesh_distance_nearest_and_percent_difference_by_hand():
    zero = np.zeros((N, 3))
    one_off = zero.copy()
    one_off[7] = (3, 4, 0)
    two_off = zero.copy()
    two_off[7], two_off[9] = (3, 4, 0), (0, 0, 12)
    assert metrics.mesh_distance(zero, one_off) == 5.0 / N            # ||.||_F / N
    assert metrics.mesh_distance(zero, two_off) == 13.0 / N           # sqrt(25 + 144)
    assert metrics.nearest(zero, {"b": two_off, "a": one_off}) == ("a", {"b": 13.0 / N, "a": 5.0 / N})
    # ties go to the first reference (the release: female unless male is strictly nearer)
    assert metrics.nearest(zero, {"female": one_off, "male": one_off.copy()})[0] == "female"
    t = hand_target()
    pred = t.copy()
    pred[42117] = (13, 1, 0)        # forehead 11: +10 %
    pred[34153] = (10, -2, 0)       # ear 12: -20 %
    assert metrics.percent_difference(pred, t) == pytest.approx(
        {"forehead": 10.0, "cheek": 0.0, "ear": -20.0, "midline": 0.0}, abs=1e-12)


def test_aggregate_averages_per_identity_first():
    rows = {"A": [{"forehead": 0.1, "cheek": 0.2, "ear": 0.3, "midline": 0.4}],
            "B": [{"forehead": 0.0, "cheek": 0.0, "ear": 0.0, "midline": 0.0}] * 3}
    s = metrics.aggregate(rows)
    # per identity then over identities: (0.1 + 0) / 2, not (0.1 + 0 + 0 + 0) / 4
    assert s.are == pytest.approx({"forehead": 0.05, "cheek": 0.1, "ear": 0.15, "midline": 0.2, "mean": 0.125})
    assert (s.identities, s.predictions, s.keypoint_error) == (2, 4, None)
    assert s.per_identity["A"]["are"]["mean"] == pytest.approx(0.25)
    assert s.per_identity["B"]["predictions"] == 3
    assert "keypoint_error" not in s.as_json()
    with_kp = metrics.aggregate({"A": [{**rows["A"][0], "keypoint": 0.5}, {**rows["A"][0], "keypoint": 0.1}]})
    assert with_kp.keypoint_error == pytest.approx(0.3)
    assert with_kp.as_json()["keypoint_error"] == pytest.approx(0.3)


def test_paper_mean_is_the_mean_of_the_four_distances():
    # Table 1, CMP supervised: ER 0.0152, FR 0.0186, MR 0.0169, CR 0.0457 -> mean 0.0241
    s = metrics.aggregate({"x": [{"ear": 0.0152, "forehead": 0.0186, "midline": 0.0169, "cheek": 0.0457}]})
    assert round(s.are["mean"], 4) == 0.0241


@pytest.mark.parametrize("bad, message", [
    (np.zeros((100, 3)), "prediction: 100 vertices is too few for the release's vertex indices (up to 42117); "
                         "expected 53215"),
    (np.zeros((N, 2)), "prediction: expected an (N, 3) array of vertices, got float64 with shape (53215, 2)"),
    (np.full((N, 3), np.nan), "prediction: NaN or infinite coordinates"),
    (np.zeros((N, 3)), "prediction: vertices 2217 and 14607 coincide (OICD is 0), so the mesh cannot be scaled"),
])
def test_bad_meshes_raise_input_errors(bad, message):
    with pytest.raises(InputError) as err:
        metrics.ratio_errors(bad, hand_target())
    assert str(err.value) == message


@pytest.mark.parametrize("keypoints, message", [
    (np.array([0.5]), "keypoints: expected a non-empty 1-D array of integer indices, got float64 with shape (1,)"),
    (np.array([], dtype=np.int64), "keypoints: expected a non-empty 1-D array of integer indices, got int64 "
                                   "with shape (0,)"),
    (np.array([3 * N]), f"keypoints: index {3 * N} is outside the {3 * N} flattened coordinates (x, y, z "
                        f"interleaved) of a {N}-vertex mesh"),
    (np.array([-1]), f"keypoints: index -1 is outside the {3 * N} flattened coordinates (x, y, z interleaved) "
                     f"of a {N}-vertex mesh"),
])
def test_bad_keypoints(keypoints, message):
    with pytest.raises(InputError) as err:
        metrics.keypoint_error(hand_target(), hand_target(), keypoints)
    assert str(err.value) == message


# --------------------------------------------------------------------------- the synthetic mean face

@pytest.fixture(scope="module")
def face() -> np.ndarray:
    pytest.importorskip("torch", reason="export.synthetic needs the export extra")
    pytest.importorskip("scipy", reason="the synthetic face mesh needs scipy")
    from export.synthetic import face_mesh

    vertices, _ = face_mesh()
    assert vertices.shape == (N, 3)
    return vertices


def stretched_ratio(v: np.ndarray, pair: tuple[int, int], factors) -> float:
    """Length of a pair after stretching by per-axis factors, divided by the stretched OICD."""
    def length(a, b):
        return math.sqrt(sum((factors[k] * (v[a][k] - v[b][k])) ** 2 for k in range(3)))
    return length(*pair) / length(*SPEC_OICD)


@pytest.mark.parametrize("factors", [(1.1, 1.0, 1.0), (1.0, 0.9, 1.0), (1.0, 1.0, 1.25), (0.95, 1.08, 1.3)])
def test_stretched_mean_face_matches_the_analytic_ratio_change(face, factors):
    pred = face * np.array(factors)
    got = metrics.ratio_errors(pred, face)
    expected = {name: abs(stretched_ratio(face, pair, factors) - stretched_ratio(face, pair, (1, 1, 1)))
                for name, pair in SPEC_PAIRS.items()}
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert any(e > 1e-3 for e in expected.values())  # the stretch does change some ratio
    assert got == pytest.approx({k: v for k, v in ref_scores(pred, face).items()}, rel=1e-12, abs=1e-15)


def test_uniformly_scaled_mean_face_has_no_error(face):
    pred = face * 1.37
    assert max(metrics.ratio_errors(pred, face).values()) < 1e-13
    rng = np.random.default_rng(0)
    keypoints = rng.choice(3 * N, 68 * 3, replace=False)
    assert metrics.keypoint_error(pred, face, keypoints) < 1e-12


def test_stretched_mean_face_keypoint_error_matches_the_reference(face):
    rng = np.random.default_rng(1)
    keypoints = np.sort(rng.choice(3 * N, 204, replace=False))
    pred = face * np.array([1.1, 0.95, 1.0]) + np.array([500.0, -300.0, 40.0])
    got = metrics.score(pred, face, keypoints)
    assert got == pytest.approx(ref_scores(pred, face, keypoints), rel=1e-10)
    assert got["keypoint"] > 1e-3


def test_nearest_stretched_mean(face):
    means = {"wide": face * [1.1, 1, 1], "skinny": face * [0.85, 1, 1], "regular": face, "slim": face * [0.93, 1, 1]}
    assert metrics.nearest(face * [0.91, 1, 1], means)[0] == "slim"
    assert metrics.nearest(face * [1.2, 1, 1], means)[0] == "wide"
    name, distances = metrics.nearest(face, means)
    assert name == "regular" and distances["regular"] == 0.0
    # ||0.1 * x|| / N for the wide mean
    assert distances["wide"] == pytest.approx(np.linalg.norm(0.1 * face[:, 0]) / N, rel=1e-12)
