// One pass over the vertices; the numpy formulation (Sim3DR/reference.py) is the reference.
#include "lighting.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sim3dr {
namespace {

inline float clip01(float x) { return std::min(std::max(x, 0.0f), 1.0f); }

// x^e; small integer exponents (the release uses 5) by multiplication, powf otherwise.
inline float power(float x, float e, int integer_e) {
  if (integer_e < 0) return std::pow(x, e);
  float r = 1.0f;
  for (int i = 0; i < integer_e; ++i) r *= x;
  return r;
}

// Unit vector from a to b (zero when a == b), as the reference's row normalisation.
// In double: a float32 difference or squared length of far-apart finite points
// overflows to inf (and the direction to NaN or 0).
inline void unit_towards(const float* to, const double* from, float* out) {
  const double d[3] = {to[0] - from[0], to[1] - from[1], to[2] - from[2]};
  const double n = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
  const double inv = n > 0 ? 1.0 / n : 0.0;  // one division instead of three
  for (int k = 0; k < 3; ++k) out[k] = static_cast<float>(d[k] * inv);
}

}  // namespace

void light_vertices(const float* vertices, const float* normals, int64_t nver,
                    const LightParams& p, float* light) {
  // The normalised copy's affine map: vn = (v - lo) * scale - half_max, per axis, in
  // double: in float32 the extent of finite vertices can overflow (|v| ~ 3e38) and its
  // inverse too (extent ~ 1e-40), which made the light NaN.
  float lo[3] = {std::numeric_limits<float>::max(), std::numeric_limits<float>::max(),
                 std::numeric_limits<float>::max()};
  float hi[3] = {std::numeric_limits<float>::lowest(), std::numeric_limits<float>::lowest(),
                 std::numeric_limits<float>::lowest()};
  for (int64_t i = 0; i < nver; ++i)
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::min(lo[k], vertices[3 * i + k]);
      hi[k] = std::max(hi[k], vertices[3 * i + k]);
    }
  double top = 0.0;
  for (int k = 0; k < 3; ++k) top = std::max(top, double(hi[k]) - lo[k]);
  const double scale = top > 0 ? 2.0 / top : 2.0;
  double half_max[3];
  for (int k = 0; k < 3; ++k) half_max[k] = (double(hi[k]) - lo[k]) * scale / 2.0;

  const int integer_e = (p.exponent == std::floor(p.exponent) && p.exponent >= 0 && p.exponent <= 16)
                            ? static_cast<int>(p.exponent) : -1;
  for (int64_t i = 0; i < nver; ++i) {
    const float* n = normals + 3 * i;
    double vn[3];
    float out[3];
    for (int k = 0; k < 3; ++k) {
      vn[k] = (double(vertices[3 * i + k]) - lo[k]) * scale - half_max[k];
      out[k] = p.ambient > 0 ? p.ambient * p.color_ambient[k] : 0.0f;
    }
    if (p.directional > 0) {
      float d[3];
      unit_towards(p.light_pos, vn, d);
      const float cos = n[0] * d[0] + n[1] * d[1] + n[2] * d[2];
      for (int k = 0; k < 3; ++k) out[k] += p.directional * (p.color_directional[k] * clip01(cos));
      if (p.specular > 0) {
        float e[3];
        unit_towards(p.view_pos, vn, e);
        float spec = 0.0f;
        for (int k = 0; k < 3; ++k) spec += power(e[k] * (2.0f * cos * n[k] - d[k]), p.exponent, integer_e);
        spec = cos != 0 ? clip01(spec) : 0.0f;
        for (int k = 0; k < 3; ++k) out[k] += p.specular * p.color_directional[k] * spec;
      }
    }
    for (int k = 0; k < 3; ++k) light[3 * i + k] = clip01(out[k]);
  }
}

}  // namespace sim3dr
