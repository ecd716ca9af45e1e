// Sim3DR core: the release's per-vertex lighting (docs/ORIGINAL.md section 3).
#pragma once

#include <cstdint>

namespace sim3dr {

struct LightParams {
  float ambient, directional, specular, exponent;
  float color_ambient[3], color_directional[3], light_pos[3], view_pos[3];
};

// Per-vertex light (nver, 3) in [0, 1] from vertices and unit normals, float32:
// light directions use the release's normalised copy of the vertices (subtract the
// per-axis minimum, divide by the largest coordinate, times 2, minus half of each
// axis's maximum); ambient + directional * clip(cos, 0, 1) + specular * clip(spec, 0, 1)
// where cos != 0, spec = sum over xyz of (e * r)^exponent (the release's element-wise
// quirk); the result clipped to [0, 1]. Finite for the parameters the Python layer
// admits (finite intensities >= 0, an integer exponent >= 0, finite colours and
// positions, normals of length <= 1) and any finite vertices.
void light_vertices(const float* vertices, const float* normals, int64_t nver,
                    const LightParams& p, float* light);

}  // namespace sim3dr
