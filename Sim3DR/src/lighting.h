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
// num_threads: as for rasterisation (<= 0: hardware threads); the result does not
// depend on it.
void light_vertices(const float* vertices, const float* normals, int64_t nver,
                    const LightParams& p, float* light, int num_threads = 1);

// get_normal followed by light_vertices in one parallel pass (the normals are not kept).
void light_colors(const float* vertices, int64_t nver, const int32_t* triangles,
                  int64_t ntri, const LightParams& p, float* light, int num_threads);

// The release's lit render (light_colors, then rasterisation into a uint8 (h, w, 3)
// image, as rasterize_u8) in one parallel pass: vertex bounds and binning, then normals
// and light by ranges of vertices, then the bands of the image. background: the (h, w, 3)
// image drawn over (copied into `image` band by band), or nullptr to draw over `image`
// as it is. depth: (h, w) z-buffer updated in place, or nullptr for a fresh one. Returns
// the number of threads, like rasterize_u8.
int render_lit_u8(const float* vertices, int64_t nver, const int32_t* triangles,
                  int64_t ntri, const LightParams& p, const uint8_t* background,
                  uint8_t* image, int h, int w, float* depth, float alpha, int num_threads);

namespace detail {

// The pieces of light_vertices, for the parallel passes.
// Normalisation of the vertex copy: vn = (v - lo) * scale - half_max per axis (double).
struct LightFrame {
  double lo[3], scale, half_max[3];
};
// Per-axis minimum and maximum of vertices [a, b), folded into lo / hi (in index order:
// fold ranges in order to get the serial result, signed zeros included).
void vertex_bounds(const float* vertices, int64_t a, int64_t b, float lo[3], float hi[3]);
void init_bounds(float lo[3], float hi[3]);
LightFrame light_frame(const float lo[3], const float hi[3]);
// light_frame of n partial bounds (lo[3], hi[3] per range, ranges in index order).
LightFrame fold_bounds(const float* bounds, int n);
// Light of vertices [a, b) (rows a.. of vertices, normals and light).
void light_range(const float* vertices, const float* normals, int64_t a, int64_t b,
                 const LightParams& p, const LightFrame& f, float* light);

}  // namespace detail
}  // namespace sim3dr
