// Sim3DR core implementation. See rasterize.h for the rules.
//
// Bit-exactness: the fast path evaluates, for every candidate pixel, exactly the same
// sequence of IEEE float32 operations as the baseline (only loop-invariant values are
// hoisted, and SSE lanes perform the same single-precision operations as scalar code).
// A compiler must not fuse a*b+c into an FMA here: contraction is switched off below
// (and setup.py should pass -ffp-contract=off for compilers that ignore the pragmas).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "rasterize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SIM3DR_NO_SIMD)
#include <emmintrin.h>
#define SIM3DR_SSE2 1
#endif

#ifndef SIM3DR_BANDS_PER_THREAD
#define SIM3DR_BANDS_PER_THREAD 8
#endif

namespace sim3dr {

int hardware_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(std::min<unsigned>(n, kMaxThreads));
}

namespace {
std::atomic<int> g_thread_start_limit{-1};
}

void set_thread_start_limit(int n) { g_thread_start_limit.store(n < 0 ? -1 : n); }

// ---------------------------------------------------------------------------------
// Normals

void get_normal(const float* vertices, int64_t nver, const int32_t* triangles,
                int64_t ntri, float* normals) {
    std::vector<double> acc(static_cast<size_t>(nver) * 3, 0.0);
    for (int64_t t = 0; t < ntri; ++t) {
        const int64_t i0 = triangles[3 * t], i1 = triangles[3 * t + 1],
                      i2 = triangles[3 * t + 2];
        const float* a = vertices + 3 * i0;
        const float* b = vertices + 3 * i1;
        const float* c = vertices + 3 * i2;
        const double e1x = double(b[0]) - a[0], e1y = double(b[1]) - a[1],
                     e1z = double(b[2]) - a[2];
        const double e2x = double(c[0]) - a[0], e2y = double(c[1]) - a[1],
                     e2z = double(c[2]) - a[2];
        const double nx = e1y * e2z - e1z * e2y;
        const double ny = e1z * e2x - e1x * e2z;
        const double nz = e1x * e2y - e1y * e2x;
        for (int64_t i : {i0, i1, i2}) {
            acc[3 * i] += nx;
            acc[3 * i + 1] += ny;
            acc[3 * i + 2] += nz;
        }
    }
    for (int64_t i = 0; i < nver; ++i) {
        const double x = acc[3 * i], y = acc[3 * i + 1], z = acc[3 * i + 2];
        const double len = std::sqrt(x * x + y * y + z * z);
        if (len > 0.0 && std::isfinite(len)) {
            normals[3 * i] = static_cast<float>(x / len);
            normals[3 * i + 1] = static_cast<float>(y / len);
            normals[3 * i + 2] = static_cast<float>(z / len);
        } else {
            normals[3 * i] = normals[3 * i + 1] = normals[3 * i + 2] = 0.0f;
        }
    }
}

#ifdef SIM3DR_SSE2
// kLaneMask[m]: all-ones float lanes where bit j of m is set.
#define SIM3DR_L(m, j) (((m) >> (j)) & 1 ? 0xFFFFFFFFu : 0u)
#define SIM3DR_ROW(m) {SIM3DR_L(m, 0), SIM3DR_L(m, 1), SIM3DR_L(m, 2), SIM3DR_L(m, 3)}
alignas(16) const uint32_t kLaneMaskBits[16][4] = {
    SIM3DR_ROW(0),  SIM3DR_ROW(1),  SIM3DR_ROW(2),  SIM3DR_ROW(3),
    SIM3DR_ROW(4),  SIM3DR_ROW(5),  SIM3DR_ROW(6),  SIM3DR_ROW(7),
    SIM3DR_ROW(8),  SIM3DR_ROW(9),  SIM3DR_ROW(10), SIM3DR_ROW(11),
    SIM3DR_ROW(12), SIM3DR_ROW(13), SIM3DR_ROW(14), SIM3DR_ROW(15)};
#undef SIM3DR_ROW
#undef SIM3DR_L
inline __m128 lane_mask(int m) {
    return _mm_castsi128_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(kLaneMaskBits[m])));
}
#endif


// ---------------------------------------------------------------------------------
// Pixel writers ("shaders"): called for a pixel that passed the depth test.

namespace {

struct Setup {
    float p0x, p0y;       // p0
    float v0x, v0y;       // v0 = p2 - p0
    float v1x, v1y;       // v1 = p1 - p0
    float d00, d01, d11;  // dot products independent of the pixel
    float inv;            // 1 / (d00*d11 - d01*d01), den != 0
    float z0, z1, z2;
    int32_t i0, i1, i2;
    int32_t xmin, xmax, ymin, ymax;
};

// C > 0: channel count fixed at compile time; C == 0: runtime count c.
template <int C>
struct ShadeU8 {
    const float* colors;
    int c;
    uint8_t* image;
    float keep;  // 1 - alpha
    float a255;  // alpha * 255
    inline void operator()(int64_t pix, int32_t i0, int32_t i1, int32_t i2, int32_t,
                           float w0, float w1, float w2) const {
        const int c = C > 0 ? C : this->c;
        const float* c0 = colors + static_cast<int64_t>(c) * i0;
        const float* c1 = colors + static_cast<int64_t>(c) * i1;
        const float* c2 = colors + static_cast<int64_t>(c) * i2;
        uint8_t* px = image + pix * c;
        for (int k = 0; k < c; ++k) {
            const float col = w0 * c0[k] + w1 * c1[k] + w2 * c2[k];
            float val = keep * static_cast<float>(px[k]) + a255 * col;
            if (!(val > 0.0f)) val = 0.0f;
            if (val > 255.0f) val = 255.0f;
            px[k] = static_cast<uint8_t>(val);  // truncation
        }
    }
#ifdef SIM3DR_SSE2
    // Four lanes of one row at once (pixels pix0..pix0+3, lanes in mask m drawn), the
    // same float operations per lane as operator(); 3 channels only.
    static constexpr bool kGroup = (C == 3);
    inline void group(int64_t pix0, int m, __m128 w0, __m128 w1, __m128 w2,
                      const Setup& s, int32_t) const {
        const float* c0 = colors + 3 * static_cast<int64_t>(s.i0);
        const float* c1 = colors + 3 * static_cast<int64_t>(s.i1);
        const float* c2 = colors + 3 * static_cast<int64_t>(s.i2);
        uint8_t* px = image + pix0 * 3;
        const __m128 zero = _mm_setzero_ps(), top = _mm_set1_ps(255.0f);
        const __m128 a = _mm_set1_ps(a255), kp = _mm_set1_ps(keep);
        alignas(16) int32_t out[3][4];
        for (int k = 0; k < 3; ++k) {
            const __m128 col = _mm_add_ps(
                _mm_add_ps(_mm_mul_ps(w0, _mm_set1_ps(c0[k])), _mm_mul_ps(w1, _mm_set1_ps(c1[k]))),
                _mm_mul_ps(w2, _mm_set1_ps(c2[k])));
            __m128 val = _mm_mul_ps(a, col);
            if (keep != 0.0f) {  // keep*old is exactly +0 when keep == 0 (alpha 1)
                const __m128 old = _mm_set_ps(px[9 + k], px[6 + k], px[3 + k], px[k]);
                val = _mm_add_ps(_mm_mul_ps(kp, old), val);
            }
            val = _mm_min_ps(_mm_max_ps(val, zero), top);  // NaN -> 0 like operator()
            _mm_store_si128(reinterpret_cast<__m128i*>(out[k]), _mm_cvttps_epi32(val));
        }
        do {
            const int j = __builtin_ctz(static_cast<unsigned>(m));
            m &= m - 1;
            px[3 * j] = static_cast<uint8_t>(out[0][j]);
            px[3 * j + 1] = static_cast<uint8_t>(out[1][j]);
            px[3 * j + 2] = static_cast<uint8_t>(out[2][j]);
        } while (m);
    }
#else
    static constexpr bool kGroup = false;
#endif
};

template <int C>
struct ShadeF32 {
    const float* colors;
    int c;
    float* image;
    float keep;   // 1 - alpha
    float alpha;
    inline void operator()(int64_t pix, int32_t i0, int32_t i1, int32_t i2, int32_t,
                           float w0, float w1, float w2) const {
        const int c = C > 0 ? C : this->c;
        const float* c0 = colors + static_cast<int64_t>(c) * i0;
        const float* c1 = colors + static_cast<int64_t>(c) * i1;
        const float* c2 = colors + static_cast<int64_t>(c) * i2;
        float* px = image + pix * c;
        for (int k = 0; k < c; ++k) {
            const float col = w0 * c0[k] + w1 * c1[k] + w2 * c2[k];
            px[k] = keep * px[k] + alpha * col;
        }
    }
    static constexpr bool kGroup = false;
};

struct ShadeIndex {
    int32_t* tri_index;
    inline void operator()(int64_t pix, int32_t, int32_t, int32_t, int32_t tri, float,
                           float, float) const {
        tri_index[pix] = tri;
    }
#ifdef SIM3DR_SSE2
    static constexpr bool kGroup = true;
    inline void group(int64_t pix0, int m, __m128, __m128, __m128, const Setup&,
                      int32_t tri) const {
        __m128i* p = reinterpret_cast<__m128i*>(tri_index + pix0);
        const __m128i sel = _mm_castps_si128(lane_mask(m));
        const __m128i old = _mm_loadu_si128(p);
        _mm_storeu_si128(p, _mm_or_si128(_mm_and_si128(sel, _mm_set1_epi32(tri)),
                                         _mm_andnot_si128(sel, old)));
    }
#else
    static constexpr bool kGroup = false;
#endif
};

// floor(min)..ceil(max) of three coordinates clipped to [0, n-1]; false when empty.
// The extremes are clamped to [-1, n] first (which changes no decision) so that floor
// and ceil can be done exactly with integer truncation (SSE2 has no roundss).
inline bool clip_range(float a, float b, float c, int n, int32_t& lo, int32_t& hi) {
    const float top = static_cast<float>(n);
    const float mn = std::min(std::max(std::min(a, std::min(b, c)), -1.0f), top);
    const float mx = std::min(std::max(std::max(a, std::max(b, c)), -1.0f), top);
    const int tmn = static_cast<int>(mn), tmx = static_cast<int>(mx);
    const int fl = tmn - (mn < static_cast<float>(tmn));  // floor(mn)
    const int ce = tmx + (mx > static_cast<float>(tmx));  // ceil(mx)
    if (fl > n - 1 || ce < 0) return false;
    lo = fl < 0 ? 0 : fl;
    hi = ce > n - 1 ? n - 1 : ce;
    return true;
}

// Per-triangle constants; false when the triangle is off-screen or degenerate.
inline bool make_setup(const float* V, const int32_t* T, int64_t t, int h, int w,
                       Setup& s) {
    s.i0 = T[3 * t];
    s.i1 = T[3 * t + 1];
    s.i2 = T[3 * t + 2];
    const float* a = V + 3 * static_cast<int64_t>(s.i0);
    const float* b = V + 3 * static_cast<int64_t>(s.i1);
    const float* c = V + 3 * static_cast<int64_t>(s.i2);
    if (!clip_range(a[1], b[1], c[1], h, s.ymin, s.ymax)) return false;
    if (!clip_range(a[0], b[0], c[0], w, s.xmin, s.xmax)) return false;
    s.p0x = a[0];
    s.p0y = a[1];
    s.v0x = c[0] - a[0];
    s.v0y = c[1] - a[1];
    s.v1x = b[0] - a[0];
    s.v1y = b[1] - a[1];
    s.d00 = s.v0x * s.v0x + s.v0y * s.v0y;
    s.d01 = s.v0x * s.v1x + s.v0y * s.v1y;
    s.d11 = s.v1x * s.v1x + s.v1y * s.v1y;
    const float den = s.d00 * s.d11 - s.d01 * s.d01;
    if (den == 0.0f) return false;  // degenerate: skipped (deviation from the release)
    s.inv = 1.0f / den;
    s.z0 = a[2];
    s.z1 = b[2];
    s.z2 = c[2];
    return true;
}

// Rasterise rows ya..yb (already clipped) of one triangle.
template <class Shade>
inline void raster_rows(const Setup& s, int32_t tri, int ya, int yb, int w, float* depth,
                        const Shade& shade) {
#ifdef SIM3DR_SSE2
    const __m128 p0x = _mm_set1_ps(s.p0x), v0x = _mm_set1_ps(s.v0x),
                 v1x = _mm_set1_ps(s.v1x), d00 = _mm_set1_ps(s.d00),
                 d01 = _mm_set1_ps(s.d01), d11 = _mm_set1_ps(s.d11),
                 inv = _mm_set1_ps(s.inv), z0 = _mm_set1_ps(s.z0),
                 z1 = _mm_set1_ps(s.z1), z2 = _mm_set1_ps(s.z2);
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    const __m128 lane = _mm_set_ps(3.0f, 2.0f, 1.0f, 0.0f);
    alignas(16) float uu[4], vv[4], ww[4], zz[4];
    for (int y = ya; y <= yb; ++y) {
        const float v2y = static_cast<float>(y) - s.p0y;
        const __m128 a0 = _mm_set1_ps(s.v0y * v2y);  // second term of d02
        const __m128 a1 = _mm_set1_ps(s.v1y * v2y);  // second term of d12
        float* drow = depth + static_cast<int64_t>(y) * w;
        for (int x0 = s.xmin; x0 <= s.xmax; x0 += 4) {
            const __m128 xs = _mm_add_ps(_mm_set1_ps(static_cast<float>(x0)), lane);
            const __m128 v2x = _mm_sub_ps(xs, p0x);
            const __m128 d02 = _mm_add_ps(_mm_mul_ps(v0x, v2x), a0);
            const __m128 d12 = _mm_add_ps(_mm_mul_ps(v1x, v2x), a1);
            const __m128 u =
                _mm_mul_ps(_mm_sub_ps(_mm_mul_ps(d11, d02), _mm_mul_ps(d01, d12)), inv);
            const __m128 v =
                _mm_mul_ps(_mm_sub_ps(_mm_mul_ps(d00, d12), _mm_mul_ps(d01, d02)), inv);
            const __m128 in =
                _mm_and_ps(_mm_and_ps(_mm_cmpge_ps(u, zero), _mm_cmpge_ps(v, zero)),
                           _mm_cmplt_ps(_mm_add_ps(u, v), one));
            const int n = s.xmax - x0 + 1;
            int m = _mm_movemask_ps(in) & (n >= 4 ? 0xF : (1 << n) - 1);
            if (!m) continue;
            const __m128 w0 = _mm_sub_ps(_mm_sub_ps(one, u), v);
            const __m128 z = _mm_add_ps(_mm_add_ps(_mm_mul_ps(w0, z0), _mm_mul_ps(v, z1)),
                                        _mm_mul_ps(u, z2));
            if (x0 + 3 < w) {
                // Depth test of the 4 lanes at once; lanes outside the triangle or past
                // xmax keep their depth (they lie in this thread's rows).
                float* dp = drow + x0;
                const __m128 old = _mm_loadu_ps(dp);
                m &= _mm_movemask_ps(_mm_cmpgt_ps(z, old));
                if (!m) continue;
                const __m128 sel = lane_mask(m);
                _mm_storeu_ps(dp, _mm_or_ps(_mm_and_ps(sel, z), _mm_andnot_ps(sel, old)));
                if constexpr (Shade::kGroup) {
                    shade.group(static_cast<int64_t>(y) * w + x0, m, w0, v, u, s, tri);
                    continue;
                }
                _mm_store_ps(uu, u);
                _mm_store_ps(vv, v);
                _mm_store_ps(ww, w0);
                do {
                    const int j = __builtin_ctz(static_cast<unsigned>(m));
                    m &= m - 1;
                    shade(static_cast<int64_t>(y) * w + x0 + j, s.i0, s.i1, s.i2, tri,
                          ww[j], vv[j], uu[j]);
                } while (m);
                continue;
            }
            _mm_store_ps(uu, u);
            _mm_store_ps(vv, v);
            _mm_store_ps(ww, w0);
            _mm_store_ps(zz, z);
            do {
                const int j = __builtin_ctz(static_cast<unsigned>(m));
                m &= m - 1;
                const int x = x0 + j;
                if (zz[j] > drow[x]) {
                    drow[x] = zz[j];
                    shade(static_cast<int64_t>(y) * w + x, s.i0, s.i1, s.i2, tri, ww[j],
                          vv[j], uu[j]);
                }
            } while (m);
        }
    }
#else
    for (int y = ya; y <= yb; ++y) {
        const float v2y = static_cast<float>(y) - s.p0y;
        const float a0 = s.v0y * v2y;
        const float a1 = s.v1y * v2y;
        float* drow = depth + static_cast<int64_t>(y) * w;
        for (int x = s.xmin; x <= s.xmax; ++x) {
            const float v2x = static_cast<float>(x) - s.p0x;
            const float d02 = s.v0x * v2x + a0;
            const float d12 = s.v1x * v2x + a1;
            const float u = (s.d11 * d02 - s.d01 * d12) * s.inv;
            const float v = (s.d00 * d12 - s.d01 * d02) * s.inv;
            if (u >= 0.0f && v >= 0.0f && u + v < 1.0f) {
                const float w0 = 1.0f - u - v;
                const float z = w0 * s.z0 + v * s.z1 + u * s.z2;
                if (z > drow[x]) {
                    drow[x] = z;
                    shade(static_cast<int64_t>(y) * w + x, s.i0, s.i1, s.i2, tri, w0, v,
                          u);
                }
            }
        }
    }
#endif
}

// Reusable two-phase barrier; the number of participants can be lowered while the
// first phase runs (when fewer threads than planned could be started).
class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        const int gen = gen_;
        if (++count_ >= n_) {
            release();
        } else {
            cv_.wait(lock, [&] { return gen != gen_; });
        }
    }
    void shrink(int n) {
        std::lock_guard<std::mutex> lock(m_);
        n_ = n;
        if (count_ > 0 && count_ >= n_) release();
    }

private:
    void release() {  // with m_ held
        count_ = 0;
        ++gen_;
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    int n_, count_ = 0, gen_ = 0;
};

// Bands per thread in the threaded path (dynamic scheduling evens out the load).
constexpr int kBandsPerThread = SIM3DR_BANDS_PER_THREAD;
// At most this many (chunk, band) triangle lists (24 bytes each when empty), so that the
// bookkeeping stays small next to the image whatever the thread count and image height.
constexpr int64_t kMaxLists = int64_t(1) << 16;

int resolve_threads(int requested) {
    return requested > 0 ? std::min(requested, kMaxThreads) : hardware_threads();
}

// Returns the number of threads that did the work.
template <class Shade>
int rasterize_fast(const float* V, const int32_t* T, int64_t ntri, int h, int w,
                   float* depth, const Shade& shade, int num_threads) {
    if (ntri <= 0 || h <= 0 || w <= 0) return 0;
    int nt = resolve_threads(num_threads);
    if (ntri < 256 || h < 8) nt = 1;
    if (nt == 1) {
        Setup s;
        for (int64_t t = 0; t < ntri; ++t)
            if (make_setup(V, T, t, h, w, s))
                raster_rows(s, static_cast<int32_t>(t), s.ymin, s.ymax, w, depth, shade);
        return 1;
    }
    // Horizontal bands, several per thread for load balance.
    // Band height: a power of two (binning uses shifts), 4..64 rows.
    int band_shift = 2;
    while (band_shift < 6 && (2 << band_shift) * nt * kBandsPerThread <= h) ++band_shift;
    const int band_h = 1 << band_shift;
    const int nbands = (h + band_h - 1) / band_h;
    nt = std::min(nt, nbands);

    // Triangles are cut into nchunks contiguous chunks, claimed dynamically in phase 1
    // (a thread that the OS deschedules holds up little). lists[c * nbands + b]: ids of
    // chunk c's triangles whose candidate rows touch band b, in index order. Only ids
    // are stored: the per-triangle constants are recomputed in phase 2 (cheaper than
    // writing and re-reading them through memory).
    const int64_t chunk_cap = std::max<int64_t>(1, kMaxLists / nbands);
    const int nchunks = static_cast<int>(std::min<int64_t>({ntri, int64_t(nt) * 8, chunk_cap}));
    std::vector<std::vector<int32_t>> lists(static_cast<size_t>(nchunks) * nbands);
    std::atomic<int> next_chunk{0}, next_band{0};
    Barrier barrier(nt);
    // A worker's exception (bad_alloc while binning) is handed to the calling thread.
    std::exception_ptr error;
    std::mutex error_mutex;
    std::atomic<bool> failed{false};

    auto phase1 = [&]() {
        // Phase 1: bin chunks of triangles by their clipped candidate rows.
        for (int c; (c = next_chunk.fetch_add(1)) < nchunks;) {
            const int64_t a = ntri * c / nchunks, b = ntri * (c + 1) / nchunks;
            std::vector<int32_t>* mine = &lists[static_cast<size_t>(c) * nbands];
            // Room for a uniform share plus a little; no slack when the lists are many.
            const size_t guess = static_cast<size_t>((b - a) / nbands + (nbands <= 256 ? 16 : 0));
            if (guess > 0)
                for (int k = 0; k < nbands; ++k) mine[k].reserve(guess);
            for (int64_t t = a; t < b; ++t) {
                const float* p0 = V + 3 * static_cast<int64_t>(T[3 * t]);
                const float* p1 = V + 3 * static_cast<int64_t>(T[3 * t + 1]);
                const float* p2 = V + 3 * static_cast<int64_t>(T[3 * t + 2]);
                int32_t y0, y1;  // x is checked in phase 2 (few triangles are off-side)
                if (!clip_range(p0[1], p1[1], p2[1], h, y0, y1)) continue;
                for (int k = y0 >> band_shift, k1 = y1 >> band_shift; k <= k1; ++k)
                    mine[k].push_back(static_cast<int32_t>(t));
            }
        }
    };
    auto work = [&](int) {
        try {
            phase1();
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            failed.store(true);
        }
        barrier.wait();
        if (failed.load()) return;
        // Phase 2: bands, each owned by one thread; chunks visited in order so every
        // pixel sees its triangles in index order.
        Setup s;
        for (int band; (band = next_band.fetch_add(1)) < nbands;) {
            const int y0 = band * band_h, y1 = std::min(h - 1, y0 + band_h - 1);
            for (int c = 0; c < nchunks; ++c) {
                for (int32_t t : lists[static_cast<size_t>(c) * nbands + band]) {
                    if (!make_setup(V, T, t, h, w, s)) continue;
                    raster_rows(s, t, std::max(y0, s.ymin), std::min(y1, s.ymax), w,
                                depth, shade);
                }
            }
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    // When the OS refuses a thread (std::system_error), carry on with those started.
    const int limit = g_thread_start_limit.load();
    for (int tid = 1; tid < nt; ++tid) {
        try {
            if (limit >= 0 && tid > limit)
                throw std::system_error(
                    std::make_error_code(std::errc::resource_unavailable_try_again),
                    "sim3dr: thread start refused (set_thread_start_limit)");
            pool.emplace_back(work, tid);
        } catch (const std::exception&) {
            break;
        }
    }
    const int started = static_cast<int>(pool.size()) + 1;
    if (started < nt) barrier.shrink(started);
    work(0);
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    return started;
}

// The plain loop: everything recomputed at every candidate pixel.
template <class Shade>
void rasterize_plain(const float* V, const int32_t* T, int64_t ntri, int h, int w,
                     float* depth, const Shade& shade) {
    for (int64_t t = 0; t < ntri; ++t) {
        const int32_t i0 = T[3 * t], i1 = T[3 * t + 1], i2 = T[3 * t + 2];
        const float p0x = V[3 * i0], p0y = V[3 * i0 + 1], z0 = V[3 * i0 + 2];
        const float p1x = V[3 * i1], p1y = V[3 * i1 + 1], z1 = V[3 * i1 + 2];
        const float p2x = V[3 * i2], p2y = V[3 * i2 + 1], z2 = V[3 * i2 + 2];
        int32_t xmin, xmax, ymin, ymax;
        if (!clip_range(p0x, p1x, p2x, w, xmin, xmax)) continue;
        if (!clip_range(p0y, p1y, p2y, h, ymin, ymax)) continue;
        for (int y = ymin; y <= ymax; ++y) {
            for (int x = xmin; x <= xmax; ++x) {
                const float px = static_cast<float>(x), py = static_cast<float>(y);
                const float v0x = p2x - p0x, v0y = p2y - p0y;
                const float v1x = p1x - p0x, v1y = p1y - p0y;
                const float v2x = px - p0x, v2y = py - p0y;
                const float d00 = v0x * v0x + v0y * v0y;
                const float d01 = v0x * v1x + v0y * v1y;
                const float d02 = v0x * v2x + v0y * v2y;
                const float d11 = v1x * v1x + v1y * v1y;
                const float d12 = v1x * v2x + v1y * v2y;
                const float den = d00 * d11 - d01 * d01;
                if (den == 0.0f) continue;  // degenerate triangle: skipped
                const float inv = 1.0f / den;
                const float u = (d11 * d02 - d01 * d12) * inv;
                const float v = (d00 * d12 - d01 * d02) * inv;
                if (!(u >= 0.0f && v >= 0.0f && u + v < 1.0f)) continue;
                const float w0 = 1.0f - u - v;
                const float z = w0 * z0 + v * z1 + u * z2;
                float& d = depth[static_cast<int64_t>(y) * w + x];
                if (z > d) {
                    d = z;
                    shade(static_cast<int64_t>(y) * w + x, i0, i1, i2,
                          static_cast<int32_t>(t), w0, v, u);
                }
            }
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------
// Public entry points

// Calls fn with the shader for the channel count (compile-time for 1, 3 and 4).
template <template <int> class Shade, class T, class Fn>
void with_shader(const float* colors, int channels, T* image, float a, float b, Fn fn) {
    switch (channels) {
        case 1: fn(Shade<1>{colors, channels, image, a, b}); break;
        case 3: fn(Shade<3>{colors, channels, image, a, b}); break;
        case 4: fn(Shade<4>{colors, channels, image, a, b}); break;
        default: fn(Shade<0>{colors, channels, image, a, b}); break;
    }
}

int rasterize_u8(const float* vertices, const int32_t* triangles, int64_t ntri,
                 const float* colors, int channels, uint8_t* image, int h, int w,
                 float* depth, float alpha, int num_threads) {
    int used = 0;
    with_shader<ShadeU8>(colors, channels, image, 1.0f - alpha, alpha * 255.0f,
                         [&](const auto& shade) {
                             used = rasterize_fast(vertices, triangles, ntri, h, w, depth,
                                                   shade, num_threads);
                         });
    return used;
}

int rasterize_f32(const float* vertices, const int32_t* triangles, int64_t ntri,
                  const float* colors, int channels, float* image, int h, int w,
                  float* depth, float alpha, int num_threads) {
    int used = 0;
    with_shader<ShadeF32>(colors, channels, image, 1.0f - alpha, alpha,
                          [&](const auto& shade) {
                              used = rasterize_fast(vertices, triangles, ntri, h, w, depth,
                                                    shade, num_threads);
                          });
    return used;
}

int rasterize_index(const float* vertices, const int32_t* triangles, int64_t ntri,
                    int h, int w, float* depth, int32_t* tri_index, int num_threads) {
    const ShadeIndex shade{tri_index};
    return rasterize_fast(vertices, triangles, ntri, h, w, depth, shade, num_threads);
}

void rasterize_baseline_u8(const float* vertices, const int32_t* triangles, int64_t ntri,
                           const float* colors, int channels, uint8_t* image, int h,
                           int w, float* depth, float alpha) {
    const ShadeU8<0> shade{colors, channels, image, 1.0f - alpha, alpha * 255.0f};
    rasterize_plain(vertices, triangles, ntri, h, w, depth, shade);
}

void rasterize_baseline_f32(const float* vertices, const int32_t* triangles, int64_t ntri,
                            const float* colors, int channels, float* image, int h,
                            int w, float* depth, float alpha) {
    const ShadeF32<0> shade{colors, channels, image, 1.0f - alpha, alpha};
    rasterize_plain(vertices, triangles, ntri, h, w, depth, shade);
}

}  // namespace sim3dr
