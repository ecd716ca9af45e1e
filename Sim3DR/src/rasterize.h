// Sim3DR core: per-vertex normals and z-buffered triangle rasterisation.
//
// All arrays are C-contiguous and validated by the Python layer (Sim3DR/__init__.py):
// vertices (nver, 3) float32 finite, triangles (ntri, 3) int32 in [0, nver),
// colours (nver, channels) float32 finite, images (h, w, channels), depth (h, w) float32.
//
// Rasterisation rules (docs/ORIGINAL.md section 3): triangles in index order; pixel
// (x, y) sampled at integer coordinates; candidate pixels floor(min)..ceil(max) of the
// triangle's x/y, clipped to the image; float32 barycentrics
//   v0 = p2 - p0, v1 = p1 - p0, v2 = p - p0,
//   d00 = v0.v0, d01 = v0.v1, d02 = v0.v2, d11 = v1.v1, d12 = v1.v2,
//   den = d00*d11 - d01*d01, inv = 1/den,
//   u = (d11*d02 - d01*d12)*inv, v = (d00*d12 - d01*d02)*inv;
// inside when u >= 0, v >= 0, u + v < 1; weights (1-u-v, v, u) for (p0, p1, p2);
// a pixel is written when the interpolated depth is strictly greater than the buffer.
// Deliberate deviation from the release: triangles whose float32 den is exactly 0 are
// skipped (the release paints their whole bounding box).
//
// The fast functions bin triangles into horizontal bands drawn by the calling thread and
// the workers of a pool kept between calls (parallel.h): one band = one thread at a time,
// per-pixel triangle order preserved, per-triangle constants hoisted (computed for 8 or
// 16 triangles at once with AVX2 / AVX-512). They are bit-identical to the *_baseline
// functions, the plain single-threaded per-triangle, per-pixel loop. uint8 images drawn
// with alpha == 1 are "deferred": depth, winning triangle and barycentrics per pixel in
// band-local buffers first, then each pixel's colour once, from its last winner (the bytes
// the plain loop leaves: with alpha == 1 a write does not depend on the pixel's previous
// value). They plan at most kMaxThreads threads and never more than there are bands; when
// the OS refuses to start a thread they go on with the threads that exist (at least the
// caller's). They return the number of threads the work was planned over (0 when there
// was nothing to draw). Errors (std::bad_alloc) are thrown on the calling thread.
#pragma once

#include <cstdint>

namespace sim3dr {

// Initial z-buffer value of the release.
constexpr float kDepthInit = -1e8f;

// Most threads one call uses (larger requests are lowered to it).
constexpr int kMaxThreads = 256;

// std::thread::hardware_concurrency(), at least 1, at most kMaxThreads.
int hardware_threads();

// Fault injection for tests: with n >= 0 every call may use at most n worker threads of
// the pool besides the calling thread (as if the OS had refused to start more); n < 0
// removes the limit.
void set_thread_start_limit(int n);

// For tests: the widest instruction set the kernels may use (3 = AVX-512 F+VL, 2 = AVX2,
// 1 = SSE2 on x86-64, 0 = plain C++ elsewhere), kept within what is compiled in and what
// the CPU supports; level < 0 = the widest. Returns the level in effect. Results do not
// depend on it.
int set_simd_level(int level);

// Smallest and largest of n int32 values (n >= 1), for the Python layer's index check.
void index_range(const int32_t* values, int64_t n, int32_t* lo, int32_t* hi);

// Whether none of n floats is infinite or NaN.
bool all_finite(const float* values, int64_t n);

// Area-weighted vertex normals: the unnormalised (v1-v0)x(v2-v0) of every triangle is
// summed into its three vertices (in double precision, in triangle order), then each
// sum is divided by its length; vertices with a zero sum (unused or only degenerate
// triangles) get 0. Threads take ranges of vertices (each summing its vertices'
// triangles in triangle order), so the result does not depend on num_threads.
void get_normal(const float* vertices, int64_t nver, const int32_t* triangles,
                int64_t ntri, float* normals, int num_threads = 1);

// Draw into a uint8 image: pixel = truncate((1-alpha)*pixel + alpha*255*colour),
// clamped to [0, 255] before truncation. num_threads <= 0 means hardware_threads().
int rasterize_u8(const float* vertices, const int32_t* triangles, int64_t ntri,
                  const float* colors, int channels, uint8_t* image, int h, int w,
                  float* depth, float alpha, int num_threads);

// Draw into a float32 image: pixel = (1-alpha)*pixel + alpha*colour.
int rasterize_f32(const float* vertices, const int32_t* triangles, int64_t ntri,
                  const float* colors, int channels, float* image, int h, int w,
                  float* depth, float alpha, int num_threads);

// Depth and triangle-index buffers only: tri_index[pixel] = index of the triangle
// that won the pixel (left untouched where none did).
int rasterize_index(const float* vertices, const int32_t* triangles, int64_t ntri,
                    int h, int w, float* depth, int32_t* tri_index, int num_threads);

// Straightforward single-threaded reference loops (full barycentric computation,
// including the division, at every candidate pixel). Used as the benchmark baseline.
void rasterize_baseline_u8(const float* vertices, const int32_t* triangles, int64_t ntri,
                           const float* colors, int channels, uint8_t* image, int h,
                           int w, float* depth, float alpha);
void rasterize_baseline_f32(const float* vertices, const int32_t* triangles, int64_t ntri,
                            const float* colors, int channels, float* image, int h,
                            int w, float* depth, float alpha);

}  // namespace sim3dr
