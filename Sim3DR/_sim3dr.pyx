# cython: boundscheck=False, wraparound=False, initializedcheck=False
# distutils: language = c++
"""Low-level binding of the Sim3DR C++ core.

No validation happens here beyond what typed memoryviews enforce (dtype, ndim,
C-contiguity, writability): call the checked API in ``Sim3DR/__init__.py`` instead.
Index ranges, finiteness and matching shapes are the caller's responsibility.

Every C++ function is declared ``except +``: a C++ exception (std::bad_alloc, a
std::system_error) becomes a Python exception (MemoryError, RuntimeError) instead of
crossing the ``nogil`` boundary and aborting the interpreter.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef extern from "rasterize.h" namespace "sim3dr":
    int kMaxThreads
    int hardware_threads() except + nogil
    void c_set_thread_start_limit "sim3dr::set_thread_start_limit"(int n) except + nogil
    int c_set_simd_level "sim3dr::set_simd_level"(int level) except + nogil
    void c_index_range "sim3dr::index_range"(const int32_t* values, int64_t n, int32_t* lo,
                                              int32_t* hi) nogil
    bint c_all_finite "sim3dr::all_finite"(const float* values, int64_t n) nogil
    void c_get_normal "sim3dr::get_normal"(
        const float* vertices, int64_t nver, const int32_t* triangles, int64_t ntri,
        float* normals, int num_threads) except + nogil
    int c_rasterize_u8 "sim3dr::rasterize_u8"(
        const float* vertices, const int32_t* triangles, int64_t ntri,
        const float* colors, int channels, uint8_t* image, int h, int w,
        float* depth, float alpha, int num_threads) except + nogil
    int c_rasterize_f32 "sim3dr::rasterize_f32"(
        const float* vertices, const int32_t* triangles, int64_t ntri,
        const float* colors, int channels, float* image, int h, int w,
        float* depth, float alpha, int num_threads) except + nogil
    int c_rasterize_index "sim3dr::rasterize_index"(
        const float* vertices, const int32_t* triangles, int64_t ntri, int h, int w,
        float* depth, int32_t* tri_index, int num_threads) except + nogil
    void c_rasterize_baseline_u8 "sim3dr::rasterize_baseline_u8"(
        const float* vertices, const int32_t* triangles, int64_t ntri,
        const float* colors, int channels, uint8_t* image, int h, int w,
        float* depth, float alpha) except + nogil
    void c_rasterize_baseline_f32 "sim3dr::rasterize_baseline_f32"(
        const float* vertices, const int32_t* triangles, int64_t ntri,
        const float* colors, int channels, float* image, int h, int w,
        float* depth, float alpha) except + nogil

cdef extern from "lighting.h" namespace "sim3dr":
    cdef cppclass LightParams:
        float ambient, directional, specular, exponent
        float color_ambient[3]
        float color_directional[3]
        float light_pos[3]
        float view_pos[3]
    void c_light_vertices "sim3dr::light_vertices"(
        const float* vertices, const float* normals, int64_t nver, const LightParams& p,
        float* light, int num_threads) except + nogil
    void c_light_colors "sim3dr::light_colors"(
        const float* vertices, int64_t nver, const int32_t* triangles, int64_t ntri,
        const LightParams& p, float* light, int num_threads) except + nogil
    int c_render_lit_u8 "sim3dr::render_lit_u8"(
        const float* vertices, int64_t nver, const int32_t* triangles, int64_t ntri,
        const LightParams& p, const uint8_t* background, uint8_t* image, int h, int w,
        float* depth, float alpha, int num_threads) except + nogil

# Pointer of a possibly empty memoryview (&view[0, 0] is invalid when a dimension is 0).
cdef inline const float* _fptr(const float[:, ::1] a):
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL

cdef inline const int32_t* _iptr(const int32_t[:, ::1] a):
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


#: Most threads one rasterisation uses (larger requests are lowered to it).
MAX_THREADS = kMaxThreads


def hardware_concurrency():
    """Number of hardware threads reported by the C++ runtime (1 to MAX_THREADS)."""
    return hardware_threads()


def set_thread_start_limit(int n):
    """Fault injection for tests: every call may use at most ``n`` worker threads (of the
    pool kept between calls) besides the calling one, as if the OS had refused to start
    more; ``n < 0`` removes the limit."""
    c_set_thread_start_limit(n)


def set_simd_level(int level):
    """For tests: the widest instruction set the C++ kernels may use (3 = AVX-512, 2 =
    AVX2, 1 = SSE2 on x86-64, 0 = plain C++ elsewhere; kept within what is compiled in and
    supported by this CPU; a negative level restores the widest). Returns the level in
    effect. Results never depend on it."""
    return c_set_simd_level(level)


def index_range(const int32_t[:, ::1] values):
    """(smallest, largest) value of a non-empty C-contiguous int32 array (one pass)."""
    cdef int32_t lo = 0, hi = 0
    cdef int64_t n = values.shape[0] * values.shape[1]
    if n == 0:
        raise ValueError("index_range: empty array")
    with nogil:
        c_index_range(&values[0, 0], n, &lo, &hi)
    return lo, hi


def all_finite(const float[:, ::1] values):
    """Whether a C-contiguous float32 array has no NaN or infinite value (one pass)."""
    cdef int64_t n = values.shape[0] * values.shape[1]
    if n == 0:
        return True
    cdef bint ok
    with nogil:
        ok = c_all_finite(&values[0, 0], n)
    return ok


def get_normal(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
               float[:, ::1] normals, int num_threads=1):
    """Area-weighted unit vertex normals written into ``normals`` (N, 3)."""
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef float* n = &normals[0, 0] if normals.shape[0] > 0 else NULL
    with nogil:
        c_get_normal(v, vertices.shape[0], t, triangles.shape[0], n, num_threads)


def rasterize_u8(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                 const float[:, ::1] colors, uint8_t[:, :, ::1] image,
                 float[:, ::1] depth, float alpha, int num_threads):
    """Fast (tiled, threaded) rasterisation into a uint8 image, in place; returns the
    number of threads that did the work (0 when there was nothing to draw)."""
    if triangles.shape[0] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        return 0
    cdef int used
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef const float* c = _fptr(colors)
    with nogil:
        used = c_rasterize_u8(v, t, triangles.shape[0], c, <int>image.shape[2],
                              &image[0, 0, 0], <int>image.shape[0], <int>image.shape[1],
                              &depth[0, 0], alpha, num_threads)
    return used


def rasterize_f32(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                  const float[:, ::1] colors, float[:, :, ::1] image,
                  float[:, ::1] depth, float alpha, int num_threads):
    """Fast (tiled, threaded) rasterisation into a float32 image, in place; returns the
    number of threads that did the work."""
    if triangles.shape[0] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        return 0
    cdef int used
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef const float* c = _fptr(colors)
    with nogil:
        used = c_rasterize_f32(v, t, triangles.shape[0], c, <int>image.shape[2],
                               &image[0, 0, 0], <int>image.shape[0], <int>image.shape[1],
                               &depth[0, 0], alpha, num_threads)
    return used


def rasterize_index(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                    float[:, ::1] depth, int32_t[:, ::1] tri_index, int num_threads):
    """Depth and winning-triangle buffers, in place; returns the number of threads."""
    if triangles.shape[0] == 0 or depth.shape[0] == 0 or depth.shape[1] == 0:
        return 0
    cdef int used
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    with nogil:
        used = c_rasterize_index(v, t, triangles.shape[0], <int>depth.shape[0],
                                 <int>depth.shape[1], &depth[0, 0], &tri_index[0, 0],
                                 num_threads)
    return used


def rasterize_baseline_u8(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                          const float[:, ::1] colors, uint8_t[:, :, ::1] image,
                          float[:, ::1] depth, float alpha):
    """Plain single-threaded per-triangle loop into a uint8 image (benchmark baseline)."""
    if triangles.shape[0] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        return
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef const float* c = _fptr(colors)
    with nogil:
        c_rasterize_baseline_u8(v, t, triangles.shape[0], c, <int>image.shape[2],
                                &image[0, 0, 0], <int>image.shape[0], <int>image.shape[1],
                                &depth[0, 0], alpha)


def rasterize_baseline_f32(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                           const float[:, ::1] colors, float[:, :, ::1] image,
                           float[:, ::1] depth, float alpha):
    """Plain single-threaded per-triangle loop into a float32 image (benchmark baseline)."""
    if triangles.shape[0] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        return
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef const float* c = _fptr(colors)
    with nogil:
        c_rasterize_baseline_f32(v, t, triangles.shape[0], c, <int>image.shape[2],
                                 &image[0, 0, 0], <int>image.shape[0], <int>image.shape[1],
                                 &depth[0, 0], alpha)


cdef LightParams _light_params(float ambient, float directional, float specular,
                               float exponent, color_ambient, color_directional,
                               light_pos, view_pos):
    cdef LightParams p
    p.ambient, p.directional, p.specular, p.exponent = ambient, directional, specular, exponent
    for k in range(3):
        p.color_ambient[k] = color_ambient[k]
        p.color_directional[k] = color_directional[k]
        p.light_pos[k] = light_pos[k]
        p.view_pos[k] = view_pos[k]
    return p


def light_vertices(const float[:, ::1] vertices, const float[:, ::1] normals, float[:, ::1] light,
                   float ambient, float directional, float specular, float exponent,
                   color_ambient, color_directional, light_pos, view_pos, int num_threads=1):
    """The release's per-vertex lighting written into ``light`` (N, 3)."""
    if vertices.shape[0] == 0:
        return
    cdef LightParams p = _light_params(ambient, directional, specular, exponent,
                                       color_ambient, color_directional, light_pos, view_pos)
    with nogil:
        c_light_vertices(&vertices[0, 0], &normals[0, 0], vertices.shape[0], p, &light[0, 0],
                         num_threads)


def light_colors(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                 float[:, ::1] light, float ambient, float directional, float specular,
                 float exponent, color_ambient, color_directional, light_pos, view_pos,
                 int num_threads):
    """Normals (as get_normal) and the release's lighting in one pass, into ``light``."""
    if vertices.shape[0] == 0:
        return
    cdef LightParams p = _light_params(ambient, directional, specular, exponent,
                                       color_ambient, color_directional, light_pos, view_pos)
    cdef const int32_t* t = _iptr(triangles)
    with nogil:
        c_light_colors(&vertices[0, 0], vertices.shape[0], t, triangles.shape[0], p,
                       &light[0, 0], num_threads)


def render_lit_u8(const float[:, ::1] vertices, const int32_t[:, ::1] triangles,
                  const uint8_t[:, :, ::1] background, uint8_t[:, :, ::1] image,
                  float[:, ::1] depth, float alpha, int num_threads, float ambient,
                  float directional, float specular, float exponent, color_ambient,
                  color_directional, light_pos, view_pos):
    """Lit render of the mesh over ``background`` into ``image`` (both uint8 (H, W, 3), the
    same shape; ``image`` is entirely overwritten): ``light_colors`` then ``rasterize_u8``
    in one pass. ``depth`` may be None (a fresh z-buffer). Returns the number of threads
    that did the work (0 when there was nothing to draw)."""
    if image.shape[0] == 0 or image.shape[1] == 0:
        return 0
    if (background.shape[0] != image.shape[0] or background.shape[1] != image.shape[1]
            or background.shape[2] != 3 or image.shape[2] != 3):
        raise ValueError("render_lit_u8: background and image must be (H, W, 3) alike")
    cdef LightParams p = _light_params(ambient, directional, specular, exponent,
                                       color_ambient, color_directional, light_pos, view_pos)
    cdef float* d = &depth[0, 0] if depth is not None else NULL
    cdef const float* v = _fptr(vertices)
    cdef const int32_t* t = _iptr(triangles)
    cdef int used
    with nogil:
        used = c_render_lit_u8(v, vertices.shape[0], t, triangles.shape[0], p,
                               &background[0, 0, 0], &image[0, 0, 0], <int>image.shape[0],
                               <int>image.shape[1], d, alpha, num_threads)
    return used
