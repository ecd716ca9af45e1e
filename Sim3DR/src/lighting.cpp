// Per-vertex lighting; the numpy formulation (Sim3DR/reference.py) is the reference.
//
// The vertices are processed in blocks, one simple loop per step of the formula over the
// block, so that the compiler can run several vertices per instruction (SSE2 lanes do the
// same IEEE operations as scalar code: the results are those of the one-vertex-at-a-time
// formulation, operation for operation). No fused multiply-adds (see rasterize.cpp).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "lighting.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "parallel.h"
#include "rasterize.h"
#include "simd.h"


namespace sim3dr {
namespace detail {
namespace {

inline float clip01(float x) { return std::min(std::max(x, 0.0f), 1.0f); }

// Vertices per block: the block's temporaries (a few KB) stay in L1.
constexpr int kBlock = 128;

}  // namespace

void init_bounds(float lo[3], float hi[3]) {
  for (int k = 0; k < 3; ++k) {
    lo[k] = std::numeric_limits<float>::max();
    hi[k] = std::numeric_limits<float>::lowest();
  }
}

void vertex_bounds(const float* vertices, int64_t a, int64_t b, float lo[3], float hi[3]) {
  // in locals: lo and hi of neighbouring ranges share a cache line between threads
  float l0 = lo[0], l1 = lo[1], l2 = lo[2], h0 = hi[0], h1 = hi[1], h2 = hi[2];
  for (int64_t i = a; i < b; ++i) {
    const float* v = vertices + 3 * i;
    l0 = std::min(l0, v[0]);
    l1 = std::min(l1, v[1]);
    l2 = std::min(l2, v[2]);
    h0 = std::max(h0, v[0]);
    h1 = std::max(h1, v[1]);
    h2 = std::max(h2, v[2]);
  }
  lo[0] = l0, lo[1] = l1, lo[2] = l2, hi[0] = h0, hi[1] = h1, hi[2] = h2;
}

// The normalised copy's affine map: vn = (v - lo) * scale - half_max, per axis, in
// double: in float32 the extent of finite vertices can overflow (|v| ~ 3e38) and its
// inverse too (extent ~ 1e-40), which made the light NaN.
LightFrame fold_bounds(const float* bounds, int n) {
  float lo[3], hi[3];
  init_bounds(lo, hi);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::min(lo[k], bounds[6 * j + k]);
      hi[k] = std::max(hi[k], bounds[6 * j + 3 + k]);
    }
  return light_frame(lo, hi);
}

LightFrame light_frame(const float lo[3], const float hi[3]) {
  LightFrame f;
  double top = 0.0;
  for (int k = 0; k < 3; ++k) top = std::max(top, double(hi[k]) - lo[k]);
  f.scale = top > 0 ? 2.0 / top : 2.0;
  for (int k = 0; k < 3; ++k) {
    f.lo[k] = lo[k];
    f.half_max[k] = (double(hi[k]) - lo[k]) * f.scale / 2.0;
  }
  return f;
}

namespace {

#ifdef SIM3DR_SSE2
// clip01 lane by lane: std::max(x, 0) is (0 > x) ? 0 : x, which is maxps(0, x), and
// std::min(y, 1) is (1 < y) ? 1 : y, which is minps(1, y) (signed zeros and NaN alike).
inline __m128 clip01_4(__m128 x) {
  return _mm_min_ps(_mm_set1_ps(1.0f), _mm_max_ps(_mm_setzero_ps(), x));
}

// Unit vector (as float) from vn to the point (px, py, pz), for two vertices.
inline void unit2(double px, double py, double pz, __m128d vx, __m128d vy, __m128d vz,
                  __m128& ox, __m128& oy, __m128& oz) {
  const __m128d d0 = _mm_sub_pd(_mm_set1_pd(px), vx), d1 = _mm_sub_pd(_mm_set1_pd(py), vy),
                d2 = _mm_sub_pd(_mm_set1_pd(pz), vz);
  const __m128d n = _mm_sqrt_pd(
      _mm_add_pd(_mm_add_pd(_mm_mul_pd(d0, d0), _mm_mul_pd(d1, d1)), _mm_mul_pd(d2, d2)));
  // n > 0 ? 1 / n : 0
  const __m128d inv = _mm_and_pd(_mm_div_pd(_mm_set1_pd(1.0), n),
                                 _mm_cmpgt_pd(n, _mm_setzero_pd()));
  ox = _mm_cvtpd_ps(_mm_mul_pd(d0, inv));
  oy = _mm_cvtpd_ps(_mm_mul_pd(d1, inv));
  oz = _mm_cvtpd_ps(_mm_mul_pd(d2, inv));
}

// light_range's formula for four vertices at once (directional light, integer exponent
// from 0 to 16): the same operations, lane by lane.
struct Light4 {
  __m128d lo[3], scale, hm[3];
  double lp[3], vp[3];
  __m128 amb[3], cd[3], sc[3], dir;
  int integer_e;
  bool specular;

  Light4(const LightParams& p, const LightFrame& f, int e, bool spec, const float* amb_,
         const float* sc_) : integer_e(e), specular(spec) {
    for (int k = 0; k < 3; ++k) {
      lo[k] = _mm_set1_pd(f.lo[k]);
      hm[k] = _mm_set1_pd(f.half_max[k]);
      lp[k] = p.light_pos[k];
      vp[k] = p.view_pos[k];
      amb[k] = _mm_set1_ps(amb_[k]);
      cd[k] = _mm_set1_ps(p.color_directional[k]);
      sc[k] = _mm_set1_ps(sc_[k]);
    }
    scale = _mm_set1_pd(f.scale);
    dir = _mm_set1_ps(p.directional);
  }

  void run(const float* V, const float* N, float* L) const {
    __m128 d[3], e[3], n[3];
    for (int half = 0; half < 2; ++half) {
      const float* v = V + 6 * half;
      __m128d vn[3];
      for (int k = 0; k < 3; ++k)
        vn[k] = _mm_sub_pd(_mm_mul_pd(_mm_sub_pd(_mm_setr_pd(v[k], v[3 + k]), lo[k]), scale), hm[k]);
      __m128 dx, dy, dz, ex, ey, ez;
      unit2(lp[0], lp[1], lp[2], vn[0], vn[1], vn[2], dx, dy, dz);
      unit2(vp[0], vp[1], vp[2], vn[0], vn[1], vn[2], ex, ey, ez);
      if (half == 0) {
        d[0] = dx; d[1] = dy; d[2] = dz;
        e[0] = ex; e[1] = ey; e[2] = ez;
      } else {
        d[0] = _mm_movelh_ps(d[0], dx); d[1] = _mm_movelh_ps(d[1], dy);
        d[2] = _mm_movelh_ps(d[2], dz);
        e[0] = _mm_movelh_ps(e[0], ex); e[1] = _mm_movelh_ps(e[1], ey);
        e[2] = _mm_movelh_ps(e[2], ez);
      }
    }
    for (int k = 0; k < 3; ++k) n[k] = _mm_setr_ps(N[k], N[3 + k], N[6 + k], N[9 + k]);
    finish(d, e, n, L);
  }

  // The float part from the unit vectors d (to the light), e (to the viewer) and the
  // normals n, four vertices in the lanes; writes their light.
  void finish(const __m128* d, const __m128* e, const __m128* n, float* L) const {
    const __m128 c = _mm_add_ps(_mm_add_ps(_mm_mul_ps(n[0], d[0]), _mm_mul_ps(n[1], d[1])),
                                _mm_mul_ps(n[2], d[2]));
    const __m128 cl = clip01_4(c);
    __m128 spec = _mm_setzero_ps();
    if (specular) {
      const __m128 c2 = _mm_mul_ps(_mm_set1_ps(2.0f), c);
      __m128 sum = _mm_setzero_ps();  // 0 + r0^e + r1^e + r2^e, in that order
      for (int k = 0; k < 3; ++k) {
        const __m128 r = _mm_mul_ps(e[k], _mm_sub_ps(_mm_mul_ps(c2, n[k]), d[k]));
        __m128 q = integer_e == 0 ? _mm_set1_ps(1.0f) : r;
        for (int i = 1; i < integer_e; ++i) q = _mm_mul_ps(q, r);
        sum = _mm_add_ps(sum, q);
      }
      // cos != 0 ? clip01(sum) : 0
      spec = _mm_and_ps(clip01_4(sum), _mm_cmpneq_ps(c, _mm_setzero_ps()));
    }
    alignas(16) float out[3][4];
    for (int k = 0; k < 3; ++k) {
      __m128 o = _mm_add_ps(amb[k], _mm_mul_ps(dir, _mm_mul_ps(cd[k], cl)));
      if (specular) o = _mm_add_ps(o, _mm_mul_ps(sc[k], spec));
      _mm_store_ps(out[k], clip01_4(o));
    }
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < 3; ++k) L[3 * i + k] = out[k][i];
  }
};
#endif

#ifdef SIM3DR_AVX2
// Light4 with the four vertices' doubles in one AVX register each.
struct Light4Avx2 {
  const Light4& c;
  SIM3DR_TARGET_AVX2 static void unit4(double px, double py, double pz, __m256d vx,
                                       __m256d vy, __m256d vz, __m128& ox, __m128& oy,
                                       __m128& oz) {
    const __m256d d0 = _mm256_sub_pd(_mm256_set1_pd(px), vx),
                  d1 = _mm256_sub_pd(_mm256_set1_pd(py), vy),
                  d2 = _mm256_sub_pd(_mm256_set1_pd(pz), vz);
    const __m256d n = _mm256_sqrt_pd(_mm256_add_pd(
        _mm256_add_pd(_mm256_mul_pd(d0, d0), _mm256_mul_pd(d1, d1)), _mm256_mul_pd(d2, d2)));
    const __m256d inv = _mm256_and_pd(_mm256_div_pd(_mm256_set1_pd(1.0), n),
                                      _mm256_cmp_pd(n, _mm256_setzero_pd(), _CMP_GT_OQ));
    ox = _mm256_cvtpd_ps(_mm256_mul_pd(d0, inv));
    oy = _mm256_cvtpd_ps(_mm256_mul_pd(d1, inv));
    oz = _mm256_cvtpd_ps(_mm256_mul_pd(d2, inv));
  }

  SIM3DR_TARGET_AVX2 void run(const float* V, const float* N, float* L) const {
    __m256d vn[3];
    for (int k = 0; k < 3; ++k) {
      const __m256d v = _mm256_cvtps_pd(_mm_setr_ps(V[k], V[3 + k], V[6 + k], V[9 + k]));
      vn[k] = _mm256_sub_pd(
          _mm256_mul_pd(_mm256_sub_pd(v, _mm256_set1_pd(_mm_cvtsd_f64(c.lo[k]))),
                        _mm256_set1_pd(_mm_cvtsd_f64(c.scale))),
          _mm256_set1_pd(_mm_cvtsd_f64(c.hm[k])));
    }
    __m128 d[3], e[3], n[3];
    unit4(c.lp[0], c.lp[1], c.lp[2], vn[0], vn[1], vn[2], d[0], d[1], d[2]);
    unit4(c.vp[0], c.vp[1], c.vp[2], vn[0], vn[1], vn[2], e[0], e[1], e[2]);
    for (int k = 0; k < 3; ++k) n[k] = _mm_setr_ps(N[k], N[3 + k], N[6 + k], N[9 + k]);
    c.finish(d, e, n, L);
  }
};
#endif

}  // namespace

void light_range(const float* vertices, const float* normals, int64_t a, int64_t b,
                 const LightParams& p, const LightFrame& f, float* light) {
  const int integer_e = (p.exponent == std::floor(p.exponent) && p.exponent >= 0 && p.exponent <= 16)
                            ? static_cast<int>(p.exponent) : -1;
  float amb[3], cd[3], sc[3];
  for (int k = 0; k < 3; ++k) {
    amb[k] = p.ambient > 0 ? p.ambient * p.color_ambient[k] : 0.0f;
    cd[k] = p.color_directional[k];
    sc[k] = p.specular * p.color_directional[k];
  }
  const bool directional = p.directional > 0, specular = directional && p.specular > 0;
  const float dir = p.directional;
  const double lx = p.light_pos[0], ly = p.light_pos[1], lz = p.light_pos[2];
  const double ex = p.view_pos[0], ey = p.view_pos[1], ez = p.view_pos[2];
  const double lo0 = f.lo[0], lo1 = f.lo[1], lo2 = f.lo[2], scale = f.scale;
  const double hm0 = f.half_max[0], hm1 = f.half_max[1], hm2 = f.half_max[2];

#ifdef SIM3DR_SSE2
  if (directional && integer_e >= 0) {
    const Light4 four(p, f, integer_e, specular, amb, sc);
#ifdef SIM3DR_AVX2
    if (simd_level() >= 2) {
      const Light4Avx2 wide{four};
      for (; a + 4 <= b; a += 4) wide.run(vertices + 3 * a, normals + 3 * a, light + 3 * a);
    }
#endif
    for (; a + 4 <= b; a += 4) four.run(vertices + 3 * a, normals + 3 * a, light + 3 * a);
  }
#endif
  alignas(64) float cosv[kBlock], rx[kBlock], ry[kBlock], rz[kBlock], spec[kBlock];
  for (int64_t i0 = a; i0 < b; i0 += kBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kBlock, b - i0));
    const float* V = vertices + 3 * i0;
    const float* N = normals + 3 * i0;
    float* L = light + 3 * i0;
    if (!directional) {
      for (int i = 0; i < n; ++i)
        for (int k = 0; k < 3; ++k) L[3 * i + k] = clip01(amb[k]);
      continue;
    }
    // Unit vectors from the normalised vertex to the light (d) and to the viewer (e), in
    // double (a float32 difference or squared length of far-apart finite points
    // overflows); cos = <n, d>; r = e * (2 cos n - d), element-wise (the release's quirk).
    for (int i = 0; i < n; ++i) {
      const double vx = (double(V[3 * i]) - lo0) * scale - hm0;
      const double vy = (double(V[3 * i + 1]) - lo1) * scale - hm1;
      const double vz = (double(V[3 * i + 2]) - lo2) * scale - hm2;
      const double d0 = lx - vx, d1 = ly - vy, d2 = lz - vz;
      const double dn = std::sqrt(d0 * d0 + d1 * d1 + d2 * d2);
      const double dinv = dn > 0 ? 1.0 / dn : 0.0;  // one division instead of three
      const float dx = static_cast<float>(d0 * dinv), dy = static_cast<float>(d1 * dinv),
                  dz = static_cast<float>(d2 * dinv);
      const float nx = N[3 * i], ny = N[3 * i + 1], nz = N[3 * i + 2];
      const float c = nx * dx + ny * dy + nz * dz;
      cosv[i] = c;
      const double e0 = ex - vx, e1 = ey - vy, e2 = ez - vz;
      const double en = std::sqrt(e0 * e0 + e1 * e1 + e2 * e2);
      const double einv = en > 0 ? 1.0 / en : 0.0;
      rx[i] = static_cast<float>(e0 * einv) * (2.0f * c * nx - dx);
      ry[i] = static_cast<float>(e1 * einv) * (2.0f * c * ny - dy);
      rz[i] = static_cast<float>(e2 * einv) * (2.0f * c * nz - dz);
    }
    if (specular) {
      // x^exponent: small integer exponents (the release uses 5) by repeated
      // multiplication from 1 (1 * x == x exactly), powf otherwise.
      if (integer_e < 0) {
        for (int i = 0; i < n; ++i) {
          rx[i] = std::pow(rx[i], p.exponent);
          ry[i] = std::pow(ry[i], p.exponent);
          rz[i] = std::pow(rz[i], p.exponent);
        }
      } else if (integer_e == 0) {
        for (int i = 0; i < n; ++i) rx[i] = ry[i] = rz[i] = 1.0f;
      } else {
        alignas(64) float qx[kBlock], qy[kBlock], qz[kBlock];
        for (int i = 0; i < n; ++i) {
          qx[i] = rx[i];
          qy[i] = ry[i];
          qz[i] = rz[i];
        }
        for (int s = 1; s < integer_e; ++s)
          for (int i = 0; i < n; ++i) {
            rx[i] *= qx[i];
            ry[i] *= qy[i];
            rz[i] *= qz[i];
          }
      }
      for (int i = 0; i < n; ++i) {
        const float sum = 0.0f + rx[i] + ry[i] + rz[i];
        spec[i] = cosv[i] != 0 ? clip01(sum) : 0.0f;
      }
    }
    for (int i = 0; i < n; ++i) {
      const float cl = clip01(cosv[i]);
      for (int k = 0; k < 3; ++k) {
        float out = amb[k];
        out += dir * (cd[k] * cl);
        if (specular) out += sc[k] * spec[i];
        L[3 * i + k] = clip01(out);
      }
    }
  }
}

}  // namespace detail

void light_vertices(const float* vertices, const float* normals, int64_t nver,
                    const LightParams& p, float* light, int num_threads) {
  if (nver <= 0) return;
  // Ranges of at least 4096 vertices (smaller ones cost more to hand out than to light).
  int nt = num_threads > 0 ? std::min(num_threads, kMaxThreads) : hardware_threads();
  const int64_t nranges = std::max<int64_t>(1, std::min<int64_t>(int64_t(nt) * 4, nver / 4096));
  if (nranges == 1) {
    float lo[3], hi[3];
    detail::init_bounds(lo, hi);
    detail::vertex_bounds(vertices, 0, nver, lo, hi);
    detail::light_range(vertices, normals, 0, nver, p, detail::light_frame(lo, hi), light);
    return;
  }
  const int r = static_cast<int>(nranges);
  std::vector<float> bounds(static_cast<size_t>(r) * 6);
  auto task = [&](int phase, int k) {
    const int64_t a = nver * k / r, b = nver * (k + 1) / r;
    if (phase == 0) {
      float* lo = &bounds[6 * static_cast<size_t>(k)];
      detail::init_bounds(lo, lo + 3);
      detail::vertex_bounds(vertices, a, b, lo, lo + 3);
    } else {
      detail::light_range(vertices, normals, a, b, p, detail::fold_bounds(bounds.data(), r),
                          light);
    }
  };
  detail::run_phases(std::min<int>(nt, r), {r, r}, task);
}

}  // namespace sim3dr
