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

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "lighting.h"
#include "parallel.h"
#include "simd.h"


#ifndef SIM3DR_BANDS_PER_THREAD
#define SIM3DR_BANDS_PER_THREAD 2
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

namespace {
// Widest instruction set the kernels may use: 3 = AVX-512 (F, VL, BW), 2 = AVX2, 1 = SSE2,
// 0 = scalar (where
// compiled in); lowered by set_simd_level (tests run every path).
int detect_simd() {
#if defined(SIM3DR_AVX2)
    __builtin_cpu_init();
#if defined(SIM3DR_AVX512)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 3;
#endif
    if (__builtin_cpu_supports("avx2")) return 2;
#endif
#if defined(SIM3DR_SSE2)
    return 1;
#else
    return 0;
#endif
}
const int g_simd_supported = detect_simd();
std::atomic<int> g_simd_level{g_simd_supported};
}  // namespace

int set_simd_level(int level) {
#if defined(SIM3DR_SSE2)
    constexpr int kLowest = 1;  // the SSE2 kernels are the baseline of an x86-64 build
#else
    constexpr int kLowest = 0;
#endif
    const int l = level < 0 ? g_simd_supported : std::max(kLowest, std::min(level, g_simd_supported));
    g_simd_level.store(l);
    return l;
}

// ---------------------------------------------------------------------------------
// Worker pool and phased jobs (parallel.h)

namespace detail {

void Job::add_phase(int n) {
    ntasks_[nphases_++] = std::max(n, 0);
}

void Job::finish_task(int phase) noexcept {
    if (done_[phase].fetch_add(1, std::memory_order_acq_rel) + 1 == ntasks_[phase] &&
        sleepers_.load() > 0) {
        std::lock_guard<std::mutex> lock(m_);
        cv_.notify_all();
    }
}

// Spins until ready() or about `limit` has passed (then false). Tasks are short (a band,
// a range of vertices, the serial normal sums: a millisecond at most): waking a thread
// that went to sleep costs more than that on a virtual machine (an interrupt to another
// virtual CPU), so waits within a call spin, yielding the core now and then.
template <class Ready>
bool spin_until(Ready ready, std::chrono::microseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (unsigned i = 1;; ++i) {
        if (ready()) return true;
#if defined(SIM3DR_SSE2)
        _mm_pause();
#endif
        if ((i & 255) == 0) {
            if (std::chrono::steady_clock::now() > end) return false;
            if ((i & 4095) == 0) std::this_thread::yield();
        }
    }
}

void Job::wait_phase(int phase) noexcept {
    const int n = ntasks_[phase];
    auto ready = [&] { return done_[phase].load(std::memory_order_acquire) >= n; };
    // then sleep until the phase's last task wakes us
    if (spin_until(ready, std::chrono::microseconds(3000))) return;
    std::unique_lock<std::mutex> lock(m_);
    sleepers_.fetch_add(1);
    cv_.wait(lock, ready);
    sleepers_.fetch_sub(1);
}

void Job::participate() noexcept {
    for (int p = 0; p < nphases_; ++p) {
        for (;;) {
            const int k = next_[p].fetch_add(1, std::memory_order_relaxed);
            if (k >= ntasks_[p]) break;
            if (!failed_.load(std::memory_order_relaxed)) {
                try {
                    fn_(ctx_, p, k);
                } catch (...) {
                    std::lock_guard<std::mutex> lock(m_);
                    if (!error_) error_ = std::current_exception();
                    failed_.store(true);
                }
            }
            finish_task(p);
        }
        wait_phase(p);
    }
}

void Job::rethrow_if_failed() {
    if (error_) std::rethrow_exception(error_);
}

namespace {

class Pool {
public:
    // Workers available to one call that wants `want` helpers: the pool grows to `want`
    // (as far as the OS lets it); set_thread_start_limit(n) caps a call at n workers.
    int reserve(int want) {
        const int limit = g_thread_start_limit.load();
        if (limit >= 0) want = std::min(want, limit);
        if (want <= 0) return 0;
        std::lock_guard<std::mutex> lock(m_);
        while (workers_ < want) {
            try {
                std::thread(&Pool::loop, this).detach();
            } catch (...) {  // std::system_error (refused), std::bad_alloc
                break;
            }
            ++workers_;
        }
        return std::min(want, workers_);
    }

    void run(Job& job, int helpers) {
        {
            std::lock_guard<std::mutex> lock(m_);
            job.slots = helpers;
            job.queued = true;
            job.next_in_queue = nullptr;
            if (tail_) tail_->next_in_queue = &job; else head_ = &job;
            tail_ = &job;
        }
        if (helpers == 1) work_cv_.notify_one(); else work_cv_.notify_all();
        job.participate();
        {
            std::lock_guard<std::mutex> lock(m_);
            if (job.queued) unlink(job);  // no worker joins from now on
        }
        // the workers still inside finish their last task (see spin_until)
        if (spin_until([&] { return job.active.load(std::memory_order_acquire) == 0; },
                       std::chrono::microseconds(3000)))
            return;
        std::unique_lock<std::mutex> lock(m_);
        done_cv_.wait(lock, [&] { return job.active.load() == 0; });
    }

private:
    void unlink(Job& job) {  // with m_ held
        Job* prev = nullptr;
        for (Job* j = head_; j; prev = j, j = j->next_in_queue) {
            if (j != &job) continue;
            (prev ? prev->next_in_queue : head_) = j->next_in_queue;
            if (tail_ == j) tail_ = prev;
            break;
        }
        job.queued = false;
        job.next_in_queue = nullptr;
    }

    void loop() {
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            work_cv_.wait(lock, [&] { return head_ != nullptr; });
            Job* job = head_;
            job->active.fetch_add(1);
            if (--job->slots == 0) unlink(*job);
            lock.unlock();
            job->participate();
            lock.lock();
            // the job may be gone as soon as active reaches 0: not touched after this
            if (job->active.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv_.notify_all();
        }
    }

    std::mutex m_;
    std::condition_variable work_cv_, done_cv_;
    Job* head_ = nullptr;
    Job* tail_ = nullptr;
    int workers_ = 0;
};

// The pool is never destroyed (its threads wait for work until the process ends); a
// forked child forgets the parent's (its threads do not exist there) and makes its own.
std::atomic<Pool*> g_pool{nullptr};

void forget_pool_in_child() { g_pool.store(nullptr); }

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p) return *p;
    static const int registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
    (void)registered;
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;
    return *p;
}

}  // namespace

int simd_level() { return g_simd_level.load(std::memory_order_relaxed); }

int run_job(Job& job, int threads) {
    const int helpers = threads > 1 ? pool().reserve(std::min(threads, kMaxThreads) - 1) : 0;
    if (helpers == 0)
        job.participate();
    else
        pool().run(job, helpers);
    job.rethrow_if_failed();
    return helpers + 1;
}

}  // namespace detail

namespace {

int resolve_threads(int requested) {
    return requested > 0 ? std::min(requested, kMaxThreads) : hardware_threads();
}

// Uninitialised scratch memory that keeps its capacity between calls.
template <class T>
class Buffer {
public:
    T* get(size_t n) {
        if (n > cap_) {
            p_.reset();
            cap_ = 0;
            p_.reset(new T[n]);
            cap_ = n;
        }
        return p_.get();
    }
    size_t bytes() const { return cap_ * sizeof(T); }
    void release() {
        p_.reset();
        cap_ = 0;
    }

private:
    std::unique_ptr<T[]> p_;
    size_t cap_ = 0;
};

// Triangles of contiguous chunks grouped by a key (a band of rows, a range of
// vertices), each group in triangle order: lists[c][off[c][k] .. off[c][k + 1]).
struct Bins {
    int nchunks = 0, nkeys = 0;
    int32_t* offsets = nullptr;  // nchunks * (nkeys + 1)
    std::vector<int32_t>* lists = nullptr;
    const int32_t* begin(int c, int k) const {
        return lists[c].data() + offsets[static_cast<size_t>(c) * (nkeys + 1) + k];
    }
    const int32_t* end(int c, int k) const {
        return lists[c].data() + offsets[static_cast<size_t>(c) * (nkeys + 1) + k + 1];
    }
};

// Per calling thread: the scratch buffers of its calls (the workers write into the
// caller's). Kept between calls when small; nothing in them outlives a call's meaning.
struct Scratch {
    Buffer<float> depth, normals, colors, bounds;
    Buffer<int32_t> tri_keys, band_offsets, group_bounds;
    Buffer<double> acc;
    std::vector<std::vector<int32_t>> band_lists;

    void trim() {
        constexpr size_t kKeep = size_t(64) << 20;
        size_t total = depth.bytes() + normals.bytes() + colors.bytes() + tri_keys.bytes() +
                       acc.bytes();
        for (auto& l : band_lists) total += l.capacity() * sizeof(int32_t);
        if (total <= kKeep) return;
        depth.release(); normals.release(); colors.release(); tri_keys.release();
        acc.release(); bounds.release();
        band_offsets.release(); group_bounds.release();
        std::vector<std::vector<int32_t>>().swap(band_lists);
    }
};

thread_local Scratch t_scratch;

struct TrimOnExit {
    ~TrimOnExit() { t_scratch.trim(); }
};

}  // namespace

// ---------------------------------------------------------------------------------
// Normals

namespace {

// Adds the unnormalised normal (v1 - v0) x (v2 - v0) of triangle t, in double, to the
// sums of its vertices in [lo, hi) (acc holds rows lo..hi-1 of 4 doubles, x y z and an
// unused one; Ranged == false: all of them, the indices are trusted as the Python layer
// checked them).
template <bool Ranged>
inline void add_face_normal(const float* vertices, const int32_t* triangles, int64_t t,
                            int64_t lo, int64_t hi, double* acc) {
    const int64_t i0 = triangles[3 * t], i1 = triangles[3 * t + 1], i2 = triangles[3 * t + 2];
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
        if (Ranged && (i < lo || i >= hi)) continue;
        double* s = acc + 4 * (i - lo);
        s[0] += nx;
        s[1] += ny;
        s[2] += nz;
    }
}

// Unit normals of rows [0, n) of acc into normals; zero (or non-finite) sums give 0.
#ifdef SIM3DR_AVX2
// add_face_normal for triangles t0..t1-1 (ids == nullptr) or ids[0..n): the corners and
// the cross product in AVX lanes (x, y, z, 0), the same double operations per lane; one
// vector add per corner (acc rows 32-byte aligned).
template <bool Ranged>
SIM3DR_TARGET_AVX2 void add_face_normals_avx2(const float* vertices, const int32_t* triangles,
                                              const int32_t* ids, int64_t t0, int64_t t1,
                                              int64_t lo, int64_t hi, double* acc) {
    auto corner = [&](int64_t i) SIM3DR_TARGET_AVX2 {
        const float* p = vertices + 3 * i;
        const __m128 f = _mm_movelh_ps(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(p)),
                                       _mm_load_ss(p + 2));  // x y z 0, nothing read past p[2]
        return _mm256_cvtps_pd(f);
    };
    for (int64_t k = t0; k < t1; ++k) {
        const int64_t t = ids ? ids[k] : k;
        const int64_t i0 = triangles[3 * t], i1 = triangles[3 * t + 1], i2 = triangles[3 * t + 2];
        const __m256d a = corner(i0);
        const __m256d e1 = _mm256_sub_pd(corner(i1), a), e2 = _mm256_sub_pd(corner(i2), a);
        // (e1.y e2.z - e1.z e2.y, e1.z e2.x - e1.x e2.z, e1.x e2.y - e1.y e2.x, 0)
        const __m256d n = _mm256_sub_pd(
            _mm256_mul_pd(_mm256_permute4x64_pd(e1, _MM_SHUFFLE(3, 0, 2, 1)),
                          _mm256_permute4x64_pd(e2, _MM_SHUFFLE(3, 1, 0, 2))),
            _mm256_mul_pd(_mm256_permute4x64_pd(e1, _MM_SHUFFLE(3, 1, 0, 2)),
                          _mm256_permute4x64_pd(e2, _MM_SHUFFLE(3, 0, 2, 1))));
        for (int64_t i : {i0, i1, i2}) {
            if (Ranged && (i < lo || i >= hi)) continue;
            double* s = acc + 4 * (i - lo);
            _mm256_store_pd(s, _mm256_add_pd(_mm256_load_pd(s), n));
        }
    }
}

// add_face_normals_avx2<true> of the triangles with a corner in [lo, hi), found eight at a
// time: the 24 corner indices are compared in three vectors and groups without one are
// skipped (a range of a coherent mesh skips most of them).
SIM3DR_TARGET_AVX2 void add_range_normals_avx2(const float* vertices, const int32_t* triangles,
                                               int64_t ta, int64_t tb, int64_t lo, int64_t hi,
                                               double* acc) {
    const __m256i base = _mm256_set1_epi32(static_cast<int32_t>(lo));
    const __m256i last = _mm256_set1_epi32(static_cast<int32_t>(hi - lo - 1));
    int64_t t = ta;
    for (; t + 8 <= tb; t += 8) {
        const __m256i* p = reinterpret_cast<const __m256i*>(triangles + 3 * t);
        uint32_t m = 0;
        for (int k = 0; k < 3; ++k) {
            // i - lo in [0, hi - lo) as unsigned: min(d, last) == d
            const __m256i d = _mm256_sub_epi32(_mm256_loadu_si256(p + k), base);
            const __m256i in = _mm256_cmpeq_epi32(_mm256_min_epu32(d, last), d);
            m |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(in))) << (8 * k);
        }
        if (!m) continue;
        for (int j = 0; j < 8; ++j)
            if ((m >> (3 * j)) & 7)
                add_face_normals_avx2<true>(vertices, triangles, nullptr, t + j, t + j + 1, lo, hi, acc);
    }
    for (; t < tb; ++t) {
        const int64_t i0 = triangles[3 * t], i1 = triangles[3 * t + 1], i2 = triangles[3 * t + 2];
        if ((i0 >= lo && i0 < hi) || (i1 >= lo && i1 < hi) || (i2 >= lo && i2 < hi))
            add_face_normals_avx2<true>(vertices, triangles, nullptr, t, t + 1, lo, hi, acc);
    }
}
#endif

// Groups of kTriGroup consecutive triangles with the smallest and largest corner index of each
// (a range of vertices skips the groups without a corner in it: in a mesh whose triangle
// order follows the surface, most of them).
constexpr int64_t kTriGroup = 16;

int64_t group_count(int64_t ntri) { return (ntri + kTriGroup - 1) / kTriGroup; }

void group_bounds(const int32_t* triangles, int64_t ntri, int64_t g0, int64_t g1,
                  int32_t* bounds) {
    for (int64_t g = g0; g < g1; ++g) {
        const int32_t* p = triangles + 3 * g * kTriGroup;
        const int64_t n = 3 * (std::min(ntri, (g + 1) * kTriGroup) - g * kTriGroup);
        int32_t lo = p[0], hi = p[0];
        for (int64_t i = 1; i < n; ++i) {
            lo = std::min(lo, p[i]);
            hi = std::max(hi, p[i]);
        }
        bounds[2 * g] = lo;
        bounds[2 * g + 1] = hi;
    }
}

// Unit normals of rows [0, n) of acc (4 doubles a row) into normals; zero (or non-finite)
// sums give 0.
void normalise(const double* acc, int64_t n, float* normals) {
    for (int64_t i = 0; i < n; ++i) {
        const double x = acc[4 * i], y = acc[4 * i + 1], z = acc[4 * i + 2];
        const double len = std::sqrt(x * x + y * y + z * z);
        const bool ok = len > 0.0 && std::isfinite(len);
        normals[3 * i] = ok ? static_cast<float>(x / len) : 0.0f;
        normals[3 * i + 1] = ok ? static_cast<float>(y / len) : 0.0f;
        normals[3 * i + 2] = ok ? static_cast<float>(z / len) : 0.0f;
    }
}

}  // namespace

// ---------------------------------------------------------------------------------
// Rasterisation primitives

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
inline __m128 blend(__m128 sel, __m128 a, __m128 b) {  // a where sel, else b
    return _mm_or_ps(_mm_and_ps(sel, a), _mm_andnot_ps(sel, b));
}
#endif

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

// Pixel writers ("shaders") of the immediate path: called for a pixel that passed the
// depth test. C > 0: channel count fixed at compile time; C == 0: runtime count c.
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

// Immediate path: rasterise rows ya..yb (already clipped) of one triangle into the
// caller's buffers (row stride w), shading every pixel that passes the depth test.
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

// Deferred path: rasterise rows ya..yb of one triangle into padded scratch buffers (16-byte
// aligned rows of stride >= w rounded up to 4): depth, the winning triangle and (with UV)
// its barycentrics u, v per pixel. Groups of four lanes start at multiples of 4, so that
// consecutive triangles load and store the same aligned blocks (a load that overlaps part
// of an earlier store waits for it to reach the cache); lanes outside [xmin, xmax] are
// masked off, so the pixels decided are exactly the plain loop's. The colour of a pixel
// is computed afterwards from its last winner only (see shade_rows): the same values as
// shading every winner in turn when the last write does not depend on the previous ones.
template <bool UV>
inline void raster_deferred(const Setup& s, int32_t tri, int ya, int yb, int64_t stride,
                            int y_origin, float* depth, int32_t* index, float* us, float* vs) {
#ifdef SIM3DR_SSE2
    const __m128 p0x = _mm_set1_ps(s.p0x), v0x = _mm_set1_ps(s.v0x),
                 v1x = _mm_set1_ps(s.v1x), d00 = _mm_set1_ps(s.d00),
                 d01 = _mm_set1_ps(s.d01), d11 = _mm_set1_ps(s.d11),
                 inv = _mm_set1_ps(s.inv), z0 = _mm_set1_ps(s.z0),
                 z1 = _mm_set1_ps(s.z1), z2 = _mm_set1_ps(s.z2);
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    const __m128 lane = _mm_set_ps(3.0f, 2.0f, 1.0f, 0.0f);
    const __m128 ti = _mm_castsi128_ps(_mm_set1_epi32(tri));
    const int xa = s.xmin & ~3;
    const int first = (0xF << (s.xmin - xa)) & 0xF;  // lanes >= xmin in the first group
    for (int y = ya; y <= yb; ++y) {
        const float v2y = static_cast<float>(y) - s.p0y;
        const __m128 a0 = _mm_set1_ps(s.v0y * v2y);  // second term of d02
        const __m128 a1 = _mm_set1_ps(s.v1y * v2y);  // second term of d12
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        int lanes = first;
        for (int x0 = xa; x0 <= s.xmax; x0 += 4, lanes = 0xF) {
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
            int m = _mm_movemask_ps(in) & lanes & (n >= 4 ? 0xF : (1 << n) - 1);
            if (!m) continue;
            const __m128 w0 = _mm_sub_ps(_mm_sub_ps(one, u), v);
            const __m128 z = _mm_add_ps(_mm_add_ps(_mm_mul_ps(w0, z0), _mm_mul_ps(v, z1)),
                                        _mm_mul_ps(u, z2));
            float* dp = depth + row + x0;
            const __m128 old = _mm_load_ps(dp);
            m &= _mm_movemask_ps(_mm_cmpgt_ps(z, old));
            if (!m) continue;
            const __m128 sel = lane_mask(m);
            _mm_store_ps(dp, blend(sel, z, old));
            float* ip = reinterpret_cast<float*>(index + row + x0);
            _mm_store_ps(ip, blend(sel, ti, _mm_load_ps(ip)));
            if (UV) {
                float* up = us + row + x0;
                float* vp = vs + row + x0;
                _mm_store_ps(up, blend(sel, u, _mm_load_ps(up)));
                _mm_store_ps(vp, blend(sel, v, _mm_load_ps(vp)));
            }
        }
    }
#else
    for (int y = ya; y <= yb; ++y) {
        const float v2y = static_cast<float>(y) - s.p0y;
        const float a0 = s.v0y * v2y;
        const float a1 = s.v1y * v2y;
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        for (int x = s.xmin; x <= s.xmax; ++x) {
            const float v2x = static_cast<float>(x) - s.p0x;
            const float d02 = s.v0x * v2x + a0;
            const float d12 = s.v1x * v2x + a1;
            const float u = (s.d11 * d02 - s.d01 * d12) * s.inv;
            const float v = (s.d00 * d12 - s.d01 * d02) * s.inv;
            if (u >= 0.0f && v >= 0.0f && u + v < 1.0f) {
                const float w0 = 1.0f - u - v;
                const float z = w0 * s.z0 + v * s.z1 + u * s.z2;
                if (z > depth[row + x]) {
                    depth[row + x] = z;
                    index[row + x] = tri;
                    if (UV) {
                        us[row + x] = u;
                        vs[row + x] = v;
                    }
                }
            }
        }
    }
#endif
}

#ifdef SIM3DR_AVX2
// Triangle setups of eight triangles at once (make_setup, lane by lane), SoA.
struct SetupBatch8 {
    alignas(32) float p0x[8], p0y[8], v0x[8], v0y[8], v1x[8], v1y[8], d00[8], d01[8],
        d11[8], inv[8], z0[8], z1[8], z2[8];
    alignas(32) int32_t xmin[8], xmax[8], ymin[8], ymax[8];
    Setup get(int j) const {
        Setup s;
        s.p0x = p0x[j]; s.p0y = p0y[j]; s.v0x = v0x[j]; s.v0y = v0y[j];
        s.v1x = v1x[j]; s.v1y = v1y[j]; s.d00 = d00[j]; s.d01 = d01[j]; s.d11 = d11[j];
        s.inv = inv[j]; s.z0 = z0[j]; s.z1 = z1[j]; s.z2 = z2[j];
        s.i0 = s.i1 = s.i2 = 0;  // not used by the deferred kernels
        s.xmin = xmin[j]; s.xmax = xmax[j]; s.ymin = ymin[j]; s.ymax = ymax[j];
        return s;
    }
};

// clip_range for eight lanes (the same clamped truncations); `ok` loses the lanes whose
// range is empty.
SIM3DR_TARGET_AVX2 inline void clip_range8(__m256 a, __m256 b, __m256 c, int n, __m256i& lo,
                                           __m256i& hi, __m256i& ok) {
    const __m256 top = _mm256_set1_ps(static_cast<float>(n)), m1 = _mm256_set1_ps(-1.0f);
    const __m256 mn = _mm256_min_ps(_mm256_max_ps(_mm256_min_ps(a, _mm256_min_ps(b, c)), m1), top);
    const __m256 mx = _mm256_min_ps(_mm256_max_ps(_mm256_max_ps(a, _mm256_max_ps(b, c)), m1), top);
    const __m256i tmn = _mm256_cvttps_epi32(mn), tmx = _mm256_cvttps_epi32(mx);
    // floor: tmn - (mn < tmn), ceil: tmx + (mx > tmx) (a true compare is -1)
    const __m256i fl = _mm256_add_epi32(
        tmn, _mm256_castps_si256(_mm256_cmp_ps(mn, _mm256_cvtepi32_ps(tmn), _CMP_LT_OQ)));
    const __m256i ce = _mm256_sub_epi32(
        tmx, _mm256_castps_si256(_mm256_cmp_ps(mx, _mm256_cvtepi32_ps(tmx), _CMP_GT_OQ)));
    const __m256i last = _mm256_set1_epi32(n - 1), zero = _mm256_setzero_si256();
    ok = _mm256_andnot_si256(
        _mm256_or_si256(_mm256_cmpgt_epi32(fl, last), _mm256_cmpgt_epi32(zero, ce)), ok);
    lo = _mm256_max_epi32(fl, zero);
    hi = _mm256_min_epi32(ce, last);
}

// The band keys of bin_bands for triangles a.. in groups of eight (gathered corners,
// clip_range8); returns where the scalar loop takes over.
SIM3DR_TARGET_AVX2 int64_t band_keys_avx2(const float* V, const int32_t* T, int64_t a,
                                          int64_t b, int h, int shift, int32_t* first,
                                          int32_t* last) {
    const __m256i stride3 = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
    const __m256i none0 = _mm256_set1_epi32(1), none1 = _mm256_setzero_si256();
    int64_t t = a;
    for (; t + 8 <= b; t += 8) {
        __m256 y[3];
        for (int k = 0; k < 3; ++k) {
            const __m256i i = _mm256_i32gather_epi32(T + 3 * t + k, stride3, 4);
            y[k] = _mm256_i32gather_ps(V + 1, _mm256_add_epi32(i, _mm256_slli_epi32(i, 1)), 4);
        }
        __m256i lo, hi, ok = _mm256_set1_epi32(-1);
        clip_range8(y[0], y[1], y[2], h, lo, hi, ok);
        const __m128i sh = _mm_cvtsi32_si128(shift);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(first + t),
                            _mm256_blendv_epi8(none0, _mm256_sra_epi32(lo, sh), ok));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(last + t),
                            _mm256_blendv_epi8(none1, _mm256_sra_epi32(hi, sh), ok));
    }
    return t;
}

// make_setup of triangles ids[0..n) (n <= 8) into `out`; returns the mask of the drawable
// ones (on screen, not degenerate).
SIM3DR_TARGET_AVX2 inline int setup8(const float* V, const int32_t* T, int32_t* ids, int n,
                                     int h, int w, SetupBatch8& out) {
    for (int j = n; j < 8; ++j) ids[j] = ids[0];  // padding lanes: dropped below
    const __m256i id = _mm256_load_si256(reinterpret_cast<const __m256i*>(ids));
    const __m256i t3 = _mm256_add_epi32(id, _mm256_slli_epi32(id, 1));
    __m256 x[3], y[3], z[3];
    for (int k = 0; k < 3; ++k) {
        const __m256i i = _mm256_i32gather_epi32(T, _mm256_add_epi32(t3, _mm256_set1_epi32(k)), 4);
        const __m256i o = _mm256_add_epi32(i, _mm256_slli_epi32(i, 1));
        x[k] = _mm256_i32gather_ps(V, o, 4);
        y[k] = _mm256_i32gather_ps(V, _mm256_add_epi32(o, _mm256_set1_epi32(1)), 4);
        z[k] = _mm256_i32gather_ps(V, _mm256_add_epi32(o, _mm256_set1_epi32(2)), 4);
    }
    __m256i ok = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i ylo, yhi, xlo, xhi;
    clip_range8(y[0], y[1], y[2], h, ylo, yhi, ok);
    clip_range8(x[0], x[1], x[2], w, xlo, xhi, ok);
    const __m256 v0x = _mm256_sub_ps(x[2], x[0]), v0y = _mm256_sub_ps(y[2], y[0]);
    const __m256 v1x = _mm256_sub_ps(x[1], x[0]), v1y = _mm256_sub_ps(y[1], y[0]);
    const __m256 d00 = _mm256_add_ps(_mm256_mul_ps(v0x, v0x), _mm256_mul_ps(v0y, v0y));
    const __m256 d01 = _mm256_add_ps(_mm256_mul_ps(v0x, v1x), _mm256_mul_ps(v0y, v1y));
    const __m256 d11 = _mm256_add_ps(_mm256_mul_ps(v1x, v1x), _mm256_mul_ps(v1y, v1y));
    const __m256 den = _mm256_sub_ps(_mm256_mul_ps(d00, d11), _mm256_mul_ps(d01, d01));
    // degenerate (den == 0) triangles are skipped
    ok = _mm256_and_si256(ok, _mm256_castps_si256(_mm256_cmp_ps(den, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    _mm256_store_ps(out.p0x, x[0]);
    _mm256_store_ps(out.p0y, y[0]);
    _mm256_store_ps(out.v0x, v0x);
    _mm256_store_ps(out.v0y, v0y);
    _mm256_store_ps(out.v1x, v1x);
    _mm256_store_ps(out.v1y, v1y);
    _mm256_store_ps(out.d00, d00);
    _mm256_store_ps(out.d01, d01);
    _mm256_store_ps(out.d11, d11);
    _mm256_store_ps(out.inv, _mm256_div_ps(_mm256_set1_ps(1.0f), den));
    _mm256_store_ps(out.z0, z[0]);
    _mm256_store_ps(out.z1, z[1]);
    _mm256_store_ps(out.z2, z[2]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.xmin), xlo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.xmax), xhi);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.ymin), ylo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.ymax), yhi);
    return _mm256_movemask_ps(_mm256_castsi256_ps(ok));
}

// Writes the lanes in `bits` of four pixels at `off`: depth z (over old), the triangle,
// and u, v (with UV).
template <bool UV>
SIM3DR_TARGET_AVX2 inline void put_avx2(int64_t off, int bits, __m128 z, __m128 old,
                                        __m128 tri, __m128 u, __m128 v, float* depth,
                                        int32_t* index, float* us, float* vs) {
    const __m128 sel = lane_mask(bits);
    _mm_storeu_ps(depth + off, _mm_blendv_ps(old, z, sel));
    float* ip = reinterpret_cast<float*>(index + off);
    _mm_storeu_ps(ip, _mm_blendv_ps(_mm_loadu_ps(ip), tri, sel));
    if (UV) {
        _mm_storeu_ps(us + off, _mm_blendv_ps(_mm_loadu_ps(us + off), u, sel));
        _mm_storeu_ps(vs + off, _mm_blendv_ps(_mm_loadu_ps(vs + off), v, sel));
    }
}

// raster_deferred with AVX2: eight lanes are two rows by four columns, from xmin (one
// group of columns for triangles up to four pixels wide, nearly all of a face mesh's).
// The row below the last (odd row count) is neither read nor written (it may belong to
// another thread's band).
template <bool UV>
SIM3DR_TARGET_AVX2 inline void raster_deferred_avx2(const Setup& s, int32_t tri, int ya,
                                                    int yb, int64_t stride, int y_origin,
                                                    float* depth, int32_t* index, float* us,
                                                    float* vs) {
    const __m256 p0x = _mm256_set1_ps(s.p0x), p0y = _mm256_set1_ps(s.p0y),
                 v0x = _mm256_set1_ps(s.v0x), v0y = _mm256_set1_ps(s.v0y),
                 v1x = _mm256_set1_ps(s.v1x), v1y = _mm256_set1_ps(s.v1y),
                 d00 = _mm256_set1_ps(s.d00), d01 = _mm256_set1_ps(s.d01),
                 d11 = _mm256_set1_ps(s.d11), inv = _mm256_set1_ps(s.inv),
                 z0 = _mm256_set1_ps(s.z0), z1 = _mm256_set1_ps(s.z1),
                 z2 = _mm256_set1_ps(s.z2);
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 lanex = _mm256_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 0.0f, 1.0f, 2.0f, 3.0f);
    const __m256i laney = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m128 ti = _mm_castsi128_ps(_mm_set1_epi32(tri));
    for (int y = ya; y <= yb; y += 2) {
        const bool two = y < yb;
        // v2y = float(row) - p0y per lane, then the row terms of d02 and d12
        const __m256 v2y = _mm256_sub_ps(
            _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32(y), laney)), p0y);
        const __m256 a0 = _mm256_mul_ps(v0y, v2y);
        const __m256 a1 = _mm256_mul_ps(v1y, v2y);
        const int rows = two ? 0xFF : 0x0F;
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        for (int x0 = s.xmin; x0 <= s.xmax; x0 += 4) {
            const __m256 xs = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(x0)), lanex);
            const __m256 v2x = _mm256_sub_ps(xs, p0x);
            const __m256 d02 = _mm256_add_ps(_mm256_mul_ps(v0x, v2x), a0);
            const __m256 d12 = _mm256_add_ps(_mm256_mul_ps(v1x, v2x), a1);
            const __m256 u = _mm256_mul_ps(
                _mm256_sub_ps(_mm256_mul_ps(d11, d02), _mm256_mul_ps(d01, d12)), inv);
            const __m256 v = _mm256_mul_ps(
                _mm256_sub_ps(_mm256_mul_ps(d00, d12), _mm256_mul_ps(d01, d02)), inv);
            const __m256 in = _mm256_and_ps(
                _mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_GE_OQ), _mm256_cmp_ps(v, zero, _CMP_GE_OQ)),
                _mm256_cmp_ps(_mm256_add_ps(u, v), one, _CMP_LT_OQ));
            const int n = s.xmax - x0 + 1;
            const int cols = n >= 4 ? 0xF : (1 << n) - 1;
            int m = _mm256_movemask_ps(in) & (cols | cols << 4) & rows;
            if (!m) continue;
            const __m256 w0 = _mm256_sub_ps(_mm256_sub_ps(one, u), v);
            const __m256 z = _mm256_add_ps(
                _mm256_add_ps(_mm256_mul_ps(w0, z0), _mm256_mul_ps(v, z1)), _mm256_mul_ps(u, z2));
            float* dp = depth + row + x0;
            const __m128 o0 = _mm_loadu_ps(dp);
            const __m128 o1 = two ? _mm_loadu_ps(dp + stride) : _mm_setzero_ps();
            const __m256 old = _mm256_insertf128_ps(_mm256_castps128_ps256(o0), o1, 1);
            m &= _mm256_movemask_ps(_mm256_cmp_ps(z, old, _CMP_GT_OQ));
            if (!m) continue;
            if (m & 0xF)
                put_avx2<UV>(row + x0, m & 0xF, _mm256_castps256_ps128(z), o0, ti,
                             _mm256_castps256_ps128(u), _mm256_castps256_ps128(v), depth,
                             index, us, vs);
            if (m >> 4)
                put_avx2<UV>(row + stride + x0, m >> 4, _mm256_extractf128_ps(z, 1), o1, ti,
                             _mm256_extractf128_ps(u, 1), _mm256_extractf128_ps(v, 1), depth,
                             index, us, vs);
        }
    }
}
#endif

// Colours of rows ya..yb from the deferred buffers, for alpha == 1 (keep == 0): the
// pixel is a255 * colour of its last winner, exactly what ShadeU8 wrote last (its
// keep * old term is +0 then, and +0 + x only differs from x for x == -0, which both
// clamp to 0).
template <int C>
void shade_rows(const float* colors, int c, const int32_t* triangles, int ya, int yb,
                int w, int64_t stride, int y_origin, const int32_t* index, const float* us,
                const float* vs, float a255, uint8_t* image) {
    c = C > 0 ? C : c;
#ifdef SIM3DR_SSE2
    if (C == 3) {
        // The three channels in three lanes: the same operations per lane.
        const __m128 zero = _mm_setzero_ps(), top = _mm_set1_ps(255.0f), a = _mm_set1_ps(a255);
        auto load3 = [](const float* q) {  // q[0..2] (reads nothing past q[2])
            return _mm_movelh_ps(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(q)),
                                 _mm_load_ss(q + 2));
        };
        for (int y = ya; y <= yb; ++y) {
            const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
            const int32_t* ir = index + row;
            uint8_t* px = image + static_cast<int64_t>(y) * w * 3;
            for (int x = 0; x < w; ++x) {
                const int32_t t = ir[x];
                if (t < 0) continue;
                const int32_t* tt = triangles + 3 * static_cast<int64_t>(t);
                const float u = us[row + x], v = vs[row + x];
                const float w0 = 1.0f - u - v;
                const __m128 col = _mm_add_ps(
                    _mm_add_ps(_mm_mul_ps(_mm_set1_ps(w0), load3(colors + 3 * static_cast<int64_t>(tt[0]))),
                               _mm_mul_ps(_mm_set1_ps(v), load3(colors + 3 * static_cast<int64_t>(tt[1])))),
                    _mm_mul_ps(_mm_set1_ps(u), load3(colors + 3 * static_cast<int64_t>(tt[2]))));
                // a255 * col clamped to [0, 255] (NaN -> 0), truncated
                const __m128i q = _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(a, col), zero), top));
                const __m128i b = _mm_packus_epi16(_mm_packs_epi32(q, q), _mm_setzero_si128());
                const uint32_t rgb = static_cast<uint32_t>(_mm_cvtsi128_si32(b));
                uint8_t* p = px + 3 * static_cast<int64_t>(x);
                p[0] = static_cast<uint8_t>(rgb);
                p[1] = static_cast<uint8_t>(rgb >> 8);
                p[2] = static_cast<uint8_t>(rgb >> 16);
            }
        }
        return;
    }
#endif
    for (int y = ya; y <= yb; ++y) {
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        const int32_t* ir = index + row;
        uint8_t* px = image + static_cast<int64_t>(y) * w * c;
        for (int x = 0; x < w; ++x) {
            const int32_t t = ir[x];
            if (t < 0) continue;
            const float u = us[row + x], v = vs[row + x];
            const float w0 = 1.0f - u - v;
            const float* c0 = colors + static_cast<int64_t>(c) * triangles[3 * static_cast<int64_t>(t)];
            const float* c1 = colors + static_cast<int64_t>(c) * triangles[3 * static_cast<int64_t>(t) + 1];
            const float* c2 = colors + static_cast<int64_t>(c) * triangles[3 * static_cast<int64_t>(t) + 2];
            uint8_t* p = px + static_cast<int64_t>(x) * c;
            for (int k = 0; k < c; ++k) {
                const float col = w0 * c0[k] + v * c1[k] + u * c2[k];
                float val = a255 * col;
                if (!(val > 0.0f)) val = 0.0f;
                if (val > 255.0f) val = 255.0f;
                p[k] = static_cast<uint8_t>(val);  // truncation
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Planning and binning

// Bands per thread in the threaded path (dynamic scheduling evens out the load).
constexpr int kBandsPerThread = SIM3DR_BANDS_PER_THREAD;
// At most this many (chunk, key) groups, so that the bookkeeping stays small next to the
// image whatever the thread count and image height.
constexpr int64_t kMaxLists = int64_t(1) << 16;

struct Plan {
    int nt = 1;          // threads
    int band_shift = 0;  // band height 1 << band_shift (nbands > 1)
    int nbands = 1;      // 1: no binning, one band of all rows
    int nranges = 1;     // ranges of vertices for normals and light (1: all at once)
    int nchunks = 0;     // triangle chunks of the binning (0 when nothing is binned)
};

// Threads and bands for rasterising ntri triangles into h rows: one thread for fewer than
// 256 triangles or 8 rows; bands of 4 to 64 rows (a power of two), several per thread;
// never more threads than bands.
Plan plan_raster(int num_threads, int64_t ntri, int h) {
    Plan p;
    int nt = resolve_threads(num_threads);
    if (ntri < 256 || h < 8) nt = 1;
    if (nt == 1) return p;
    int band_shift = 2;
    while (band_shift < 6 && (2 << band_shift) * nt * kBandsPerThread <= h) ++band_shift;
    p.band_shift = band_shift;
    p.nbands = static_cast<int>((int64_t(h) + (1 << band_shift) - 1) >> band_shift);
    p.nt = std::min(nt, p.nbands);
    return p;
}

// Ranges of vertices for the light (and, with many threads, the normals): about 2 per
// thread, at least 1024 vertices each.
void plan_ranges(Plan& p, int64_t nver) {
    if (p.nt == 1) return;
    p.nranges = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(int64_t(p.nt) * 2, nver / 1024)));
}

// The normal sums are split into ranges of vertices only from this many threads on: each
// range finds its triangles among all of them (groups of triangles whose corners span
// the range), which on the release's topology costs about twice the serial sum's work.
// With fewer threads one task sums them all while the others bin the triangles.
constexpr int kRangedNormalThreads = 8;

int normal_ranges(const Plan& p) {
    return p.nt >= kRangedNormalThreads ? p.nranges : 1;
}

void plan_chunks(Plan& p, int64_t ntri) {
    if (p.nbands <= 1) return;
    p.nchunks = static_cast<int>(std::min<int64_t>({ntri, int64_t(p.nt) * 4, kMaxLists / p.nbands}));
    p.nchunks = std::max(p.nchunks, 1);
}

// Bins by band and by vertex range, filled by chunk tasks (chunk c: triangles
// [ntri * c / nchunks, ntri * (c + 1) / nchunks)).
#ifdef SIM3DR_AVX512
SIM3DR_TARGET_AVX512 int64_t band_keys_avx512(const float* V, const int32_t* T, int64_t a,
                                              int64_t b, int h, int shift, int32_t* first,
                                              int32_t* last);
#endif

struct Binning {
    const float* V;
    const int32_t* T;
    int64_t ntri;
    int h, w;
    Plan plan;
    Bins bands;
    int32_t* tri_keys = nullptr;  // first band of each triangle, then the last ones

    void prepare(Scratch& s) {
        const int nc = plan.nchunks;
        if (plan.nbands > 1) {
            bands.nchunks = nc;
            bands.nkeys = plan.nbands;
            bands.offsets = s.band_offsets.get(static_cast<size_t>(nc) * (plan.nbands + 1));
            if (s.band_lists.size() < static_cast<size_t>(nc)) s.band_lists.resize(nc);
            bands.lists = s.band_lists.data();
            // first bands, then last ones (each ntri + 16: room for the vector stores)
            tri_keys = s.tri_keys.get(static_cast<size_t>(2 * (ntri + 16)));
        }
    }

    int64_t chunk_begin(int c) const { return ntri * c / plan.nchunks; }

    // Counting sort of chunk c's triangles by band (rows of their candidate pixels; the
    // columns are checked when drawing). Consecutive triangles of a mesh mostly share
    // their band: the counts and write positions of a run of one-band triangles stay in
    // registers (a counter in memory would make every triangle wait for the previous
    // one's store).
    void bin_bands(int c) {
        const int64_t a = chunk_begin(c), b = chunk_begin(c + 1);
        const int nk = bands.nkeys, shift = plan.band_shift;
        int32_t* off = bands.offsets + static_cast<size_t>(c) * (nk + 1);
        std::fill(off, off + nk + 1, 0);
        int32_t* first = tri_keys;
        int32_t* last = tri_keys + ntri + 16;
        // first[t]..last[t]: the bands of triangle t's candidate rows (1..0 when none)
        int64_t t = a;
#ifdef SIM3DR_AVX512
        if (g_simd_level.load(std::memory_order_relaxed) >= 3)
            t = band_keys_avx512(V, T, a, b, h, shift, first, last);
#endif
#ifdef SIM3DR_AVX2
        if (t < b && g_simd_level.load(std::memory_order_relaxed) >= 2 && 3 * ntri < INT32_MAX)
            t = band_keys_avx2(V, T, a, b, h, shift, first, last);
#endif
        for (; t < b; ++t) {
            const float* p0 = V + 3 * static_cast<int64_t>(T[3 * t]);
            const float* p1 = V + 3 * static_cast<int64_t>(T[3 * t + 1]);
            const float* p2 = V + 3 * static_cast<int64_t>(T[3 * t + 2]);
            int32_t y0, y1;
            if (!clip_range(p0[1], p1[1], p2[1], h, y0, y1)) {
                first[t] = 1;
                last[t] = 0;
            } else {
                first[t] = y0 >> shift;
                last[t] = y1 >> shift;
            }
        }
        int64_t total = 0;
        int cur = -1;
        int32_t run = 0;
        for (t = a; t < b; ++t) {
            const int k0 = first[t], k1 = last[t];
            if (k0 == k1 && k0 == cur) {
                ++run;
                continue;
            }
            if (k0 > k1) continue;  // no rows on the image
            if (cur >= 0) off[cur + 1] += run;
            total += run;
            cur = -1;
            run = 0;
            if (k0 == k1) {
                cur = k0;
                run = 1;
            } else {
                for (int k = k0; k <= k1; ++k) ++off[k + 1];
                total += k1 - k0 + 1;
            }
        }
        if (cur >= 0) off[cur + 1] += run;
        total += run;
        fill(bands, c, total, [&](int32_t* out, int32_t* pos) {
            int cur = -1;
            int32_t at = 0;
            for (int64_t t = a; t < b; ++t) {
                const int k0 = first[t], k1 = last[t];
                if (k0 == k1) {
                    if (k0 != cur) {
                        if (cur >= 0) pos[cur] = at;
                        cur = k0;
                        at = pos[k0];
                    }
                    out[at++] = static_cast<int32_t>(t);
                } else if (k0 < k1) {
                    if (cur >= 0) pos[cur] = at;
                    cur = -1;
                    for (int k = k0; k <= k1; ++k) out[pos[k]++] = static_cast<int32_t>(t);
                }
            }
            if (cur >= 0) pos[cur] = at;
        });
    }

    // off[k + 1] holds key k's count: turn the counts into starts, place the entries
    // (off[k + 1] ends as key k's end, off[k] as its start).
    template <class Each>
    static void fill(Bins& bins, int c, int64_t total, Each each) {
        const int nk = bins.nkeys;
        int32_t* off = bins.offsets + static_cast<size_t>(c) * (nk + 1);
        int32_t run = 0;
        for (int k = 0; k < nk; ++k) {
            const int32_t n = off[k + 1];
            off[k + 1] = run;
            run += n;
        }
        if (total > INT32_MAX) throw std::bad_alloc();
        std::vector<int32_t>& list = bins.lists[c];
        if (list.size() < static_cast<size_t>(total)) list.resize(static_cast<size_t>(total));
        // each(out, pos): place every entry of key k at out[pos[k]++] (pos = off + 1)
        each(list.data(), off + 1);
    }
};

// ---------------------------------------------------------------------------------
// Jobs

// Vertex normals by ranges of vertices [range_begin(r), range_begin(r + 1)): each range
// sums the triangles with a corner in it, in triangle order (so the sums are the serial
// ones whatever the ranges).
struct NormalPass {
    const float* V;
    int64_t nver;
    const int32_t* T;
    int64_t ntri;
    int nranges;
    double* acc;      // 4 * nver, 32-byte aligned (see acc_buffer)
    float* normals;   // 3 * nver
    int32_t* groups = nullptr;  // group_bounds (nranges > 1), filled by bound_groups()

    int64_t range_begin(int r) const { return nver * r / nranges; }

    // Part k of n of the group bounds (tasks before the ranges run).
    void bound_groups(int k, int n) const {
        const int64_t ng = group_count(ntri);
        group_bounds(T, ntri, ng * k / n, ng * (k + 1) / n, groups);
    }

    void run(int r) const {
        const int64_t lo = range_begin(r), hi = range_begin(r + 1);
        double* a = acc + 4 * lo;
        std::fill(a, a + 4 * (hi - lo), 0.0);
        const bool avx2 = g_simd_level.load(std::memory_order_relaxed) >= 2 && 3 * ntri < INT32_MAX;
        (void)avx2;
        if (nranges == 1) {
#ifdef SIM3DR_AVX2
            if (avx2)
                add_face_normals_avx2<false>(V, T, nullptr, 0, ntri, lo, hi, a);
            else
#endif
                for (int64_t t = 0; t < ntri; ++t) add_face_normal<false>(V, T, t, lo, hi, a);
        } else {
            const int64_t ng = group_count(ntri);
            for (int64_t g = 0; g < ng; ++g) {
                if (groups[2 * g + 1] < lo || groups[2 * g] >= hi) continue;
                const int64_t ta = g * kTriGroup, tb = std::min(ntri, ta + kTriGroup);
#ifdef SIM3DR_AVX2
                if (avx2) {
                    add_range_normals_avx2(V, T, ta, tb, lo, hi, a);
                    continue;
                }
#endif
                for (int64_t t = ta; t < tb; ++t) {
                    const int64_t i0 = T[3 * t], i1 = T[3 * t + 1], i2 = T[3 * t + 2];
                    if ((i0 >= lo && i0 < hi) || (i1 >= lo && i1 < hi) || (i2 >= lo && i2 < hi))
                        add_face_normal<true>(V, T, t, lo, hi, a);
                }
            }
        }
        normalise(a, hi - lo, normals + 3 * lo);
    }
};

// Scratch for the normal sums: 4 doubles per vertex, 32-byte aligned.
double* acc_buffer(Buffer<double>& buf, int64_t nver) {
    double* p = buf.get(static_cast<size_t>(4 * nver + 4));
    const uintptr_t misalign = reinterpret_cast<uintptr_t>(p) & 31;
    return misalign ? p + (32 - misalign) / sizeof(double) : p;
}

struct BandPass;
#ifdef SIM3DR_AVX2
template <bool UV>
SIM3DR_TARGET_AVX2 void deferred_triangles_avx2(const BandPass& b, int band, int y0, int y1);
#endif
#ifdef SIM3DR_AVX512
template <bool UV>
SIM3DR_TARGET_AVX512 void deferred_triangles_avx512(const BandPass& b, int band, int y0, int y1);
SIM3DR_TARGET_AVX512 void rgb_triangles_avx512(const BandPass& b, int band, int y0, int y1,
                                               const float* colors, float a255,
                                               uint8_t* image);
#endif

// Per thread (the caller's or a worker's): the deferred buffers of the band it draws,
// rows y0..y1 of stride (>= w + 3, a multiple of 4: 16-byte aligned rows) floats or ints.
// A band is drawn and then coloured while its buffers are still in the core's cache.
struct BandScratch {
    Buffer<float> depth, u, v;
    Buffer<int32_t> index;
    void trim() {
        constexpr size_t kKeep = size_t(16) << 20;
        if (depth.bytes() + u.bytes() + v.bytes() + index.bytes() <= kKeep) return;
        depth.release(); u.release(); v.release(); index.release();
    }
};
thread_local BandScratch t_band;

// The rasterisation of one band, deferred or immediate.
struct BandPass {
    const float* V;
    const int32_t* T;
    int64_t ntri;
    int h, w;
    const Binning* bins;
    int nbands;
    int band_shift;
    float* depth = nullptr;  // the caller's (h, w) z-buffer, or nullptr (fresh)
    // render_lit_u8: the background copied into the image rows of each band first
    const uint8_t* background = nullptr;
    uint8_t* canvas = nullptr;
    // deferred buffers of the band being drawn (set by deferred())
    int64_t stride = 0;
    int y_origin = 0;
    float* dscr = nullptr;
    int32_t* iscr = nullptr;
    float* us = nullptr;
    float* vs = nullptr;

    void rows(int band, int& y0, int& y1) const {
        if (nbands == 1) {
            y0 = 0;
            y1 = h - 1;
        } else {
            y0 = band << band_shift;
            y1 = std::min(h - 1, y0 + (1 << band_shift) - 1);
        }
    }

    void copy_background(int y0, int y1) const {
        if (!background) return;
        const size_t row = static_cast<size_t>(w) * 3;
        std::memcpy(canvas + y0 * row, background + y0 * row, (y1 - y0 + 1) * row);
    }

    template <class Draw>
    void each_triangle(int band, int y0, int y1, Draw draw) const {
        Setup s;
        if (nbands == 1) {
            for (int64_t t = 0; t < ntri; ++t)
                if (make_setup(V, T, t, h, w, s)) draw(s, static_cast<int32_t>(t), s.ymin, s.ymax);
            return;
        }
        const Bins& b = bins->bands;
        for (int c = 0; c < b.nchunks; ++c)
            for (const int32_t* p = b.begin(c, band), *e = b.end(c, band); p != e; ++p) {
                if (!make_setup(V, T, *p, h, w, s)) continue;
                draw(s, *p, std::max(y0, s.ymin), std::min(y1, s.ymax));
            }
    }

    // Deferred path: depth, winners (and with UV barycentrics) of the band's pixels in
    // this thread's band buffers, then after(y0, y1, band) with them in place; the
    // caller's z-buffer (if any) is read before and written after.
    template <bool UV, class After>
    void deferred(int band, After after) const {
        BandPass b = *this;  // this thread's buffers
        int y0, y1;
        rows(band, y0, y1);
        copy_background(y0, y1);
        const int64_t n = static_cast<int64_t>(y1 - y0 + 1) * stride;
        BandScratch& bs = t_band;
        b.y_origin = y0;
        b.dscr = bs.depth.get(static_cast<size_t>(n));
        b.iscr = bs.index.get(static_cast<size_t>(n));
        b.us = UV ? bs.u.get(static_cast<size_t>(n)) : nullptr;
        b.vs = UV ? bs.v.get(static_cast<size_t>(n)) : nullptr;
        for (int y = y0; y <= y1; ++y) {
            float* d = b.dscr + (y - y0) * stride;
            if (depth)
                std::memcpy(d, depth + static_cast<int64_t>(y) * w, sizeof(float) * w);
            else
                std::fill(d, d + w, kDepthInit);
            std::fill(d + w, d + stride, kDepthInit);  // padding: never drawn
        }
        std::fill(b.iscr, b.iscr + n, -1);
        b.template draw_deferred<UV>(band, y0, y1);
        if (depth)
            for (int y = y0; y <= y1; ++y)
                std::memcpy(depth + static_cast<int64_t>(y) * w, b.dscr + (y - y0) * stride,
                            sizeof(float) * w);
        after(b, y0, y1);
        bs.trim();
    }

    // uint8 RGB, alpha 1, colours known: with AVX-512 the pixels are coloured as they are
    // drawn (no per-pixel winners and barycentrics); otherwise the deferred path and
    // shade_rows. The same bytes either way.
    void rgb(int band, const float* colors, float a255, uint8_t* image) const {
#ifdef SIM3DR_AVX512
        if (g_simd_level.load(std::memory_order_relaxed) >= 3) {
            BandPass b = *this;
            int y0, y1;
            rows(band, y0, y1);
            copy_background(y0, y1);
            const int64_t n = static_cast<int64_t>(y1 - y0 + 1) * stride;
            BandScratch& bs = t_band;
            b.y_origin = y0;
            b.dscr = bs.depth.get(static_cast<size_t>(n));
            for (int y = y0; y <= y1; ++y) {
                float* d = b.dscr + (y - y0) * stride;
                if (depth)
                    std::memcpy(d, depth + static_cast<int64_t>(y) * w, sizeof(float) * w);
                else
                    std::fill(d, d + w, kDepthInit);
                std::fill(d + w, d + stride, kDepthInit);
            }
            rgb_triangles_avx512(b, band, y0, y1, colors, a255, image);
            if (depth)
                for (int y = y0; y <= y1; ++y)
                    std::memcpy(depth + static_cast<int64_t>(y) * w, b.dscr + (y - y0) * stride,
                                sizeof(float) * w);
            bs.trim();
            return;
        }
#endif
        deferred<true>(band, [&](const BandPass& b, int y0, int y1) {
            shade_rows<3>(colors, 3, T, y0, y1, w, b.stride, b.y_origin, b.iscr, b.us, b.vs,
                          a255, image);
        });
    }

    template <bool UV>
    void draw_deferred(int band, int y0, int y1) const {
        const int simd = g_simd_level.load(std::memory_order_relaxed);
        (void)simd;
#ifdef SIM3DR_AVX512
        if (simd >= 3)
            deferred_triangles_avx512<UV>(*this, band, y0, y1);
        else
#endif
#ifdef SIM3DR_AVX2
        if (simd >= 2)
            deferred_triangles_avx2<UV>(*this, band, y0, y1);
        else
#endif
            each_triangle(band, y0, y1, [&](const Setup& s, int32_t t, int ya, int yb) {
                raster_deferred<UV>(s, t, ya, yb, stride, y_origin, dscr, iscr, us, vs);
            });
    }

    // depth: the caller's z-buffer, or scratch (fresh_depth) that each band initialises.
    template <class Shade>
    void immediate(int band, const Shade& shade, bool fresh_depth = false) const {
        int y0, y1;
        rows(band, y0, y1);
        copy_background(y0, y1);
        if (fresh_depth)
            std::fill(depth + static_cast<int64_t>(y0) * w, depth + static_cast<int64_t>(y1 + 1) * w,
                      kDepthInit);
        each_triangle(band, y0, y1, [&](const Setup& s, int32_t t, int ya, int yb) {
            raster_rows(s, t, ya, yb, w, depth, shade);
        });
    }
};

// The triangles of one band in drawing order, a batch at a time (across the chunks' lists).
struct IdStream {
    const BandPass& b;
    int band;
    int c = 0;
    const int32_t* p = nullptr;
    const int32_t* e = nullptr;
    int64_t t = 0;

    IdStream(const BandPass& pass, int k) : b(pass), band(k) {
        if (b.nbands > 1 && b.bins->bands.nchunks > 0) {
            p = b.bins->bands.begin(0, band);
            e = b.bins->bands.end(0, band);
        }
    }
    // Up to n ids into out; 0 at the end.
    int next(int32_t* out, int n) {
        if (b.nbands == 1) {
            const int k = static_cast<int>(std::min<int64_t>(n, b.ntri - t));
            for (int j = 0; j < k; ++j) out[j] = static_cast<int32_t>(t + j);
            t += k;
            return k;
        }
        const Bins& bins = b.bins->bands;
        int k = 0;
        while (k < n) {
            if (p == e) {
                if (++c >= bins.nchunks) break;
                p = bins.begin(c, band);
                e = bins.end(c, band);
                continue;
            }
            const int m = static_cast<int>(std::min<ptrdiff_t>(n - k, e - p));
            std::memcpy(out + k, p, sizeof(int32_t) * m);
            p += m;
            k += m;
        }
        return k;
    }
};

#ifdef SIM3DR_AVX2
// BandPass::each_triangle with the AVX2 kernel inlined (a function compiled for AVX2 can
// inline the plain ones, not the other way round).
template <bool UV>
SIM3DR_TARGET_AVX2 void deferred_triangles_avx2(const BandPass& b, int band, int y0, int y1) {
    // Batches of eight: setup8 of the next batch is issued before the current one is drawn
    // (its gathers wait for memory meanwhile); each drawable triangle in order.
    alignas(32) int32_t ids[2][8];
    SetupBatch8 batch[2];
    IdStream stream(b, band);
    int n = stream.next(ids[0], 8);
    if (!n) return;
    int m = setup8(b.V, b.T, ids[0], n, b.h, b.w, batch[0]);
    for (int cur = 0;; cur ^= 1) {
        const int n2 = stream.next(ids[cur ^ 1], 8);
        const int m2 = n2 ? setup8(b.V, b.T, ids[cur ^ 1], n2, b.h, b.w, batch[cur ^ 1]) : 0;
        while (m) {
            const int j = __builtin_ctz(static_cast<unsigned>(m));
            m &= m - 1;
            const Setup s = batch[cur].get(j);
            raster_deferred_avx2<UV>(s, ids[cur][j], std::max(y0, s.ymin), std::min(y1, s.ymax),
                                     b.stride, b.y_origin, b.dscr, b.iscr, b.us, b.vs);
        }
        if (!n2) return;
        m = m2;
    }
}
#endif

#ifdef SIM3DR_AVX512
// make_setup of sixteen triangles (as setup8).
struct SetupBatch16 {
    alignas(64) float p0x[16], p0y[16], v0x[16], v0y[16], v1x[16], v1y[16], d00[16],
        d01[16], d11[16], inv[16], z0[16], z1[16], z2[16];
    alignas(64) int32_t xmin[16], xmax[16], ymin[16], ymax[16];
};

SIM3DR_TARGET_AVX512 inline void clip_range16(__m512 a, __m512 b, __m512 c, int n,
                                              __m512i& lo, __m512i& hi, __mmask16& ok) {
    const __m512 top = _mm512_set1_ps(static_cast<float>(n)), m1 = _mm512_set1_ps(-1.0f);
    const __m512 mn = _mm512_min_ps(_mm512_max_ps(_mm512_min_ps(a, _mm512_min_ps(b, c)), m1), top);
    const __m512 mx = _mm512_min_ps(_mm512_max_ps(_mm512_max_ps(a, _mm512_max_ps(b, c)), m1), top);
    const __m512i tmn = _mm512_cvttps_epi32(mn), tmx = _mm512_cvttps_epi32(mx);
    const __m512i one = _mm512_set1_epi32(1);
    // floor: tmn - (mn < tmn), ceil: tmx + (mx > tmx)
    const __m512i fl = _mm512_mask_sub_epi32(
        tmn, _mm512_cmp_ps_mask(mn, _mm512_cvtepi32_ps(tmn), _CMP_LT_OQ), tmn, one);
    const __m512i ce = _mm512_mask_add_epi32(
        tmx, _mm512_cmp_ps_mask(mx, _mm512_cvtepi32_ps(tmx), _CMP_GT_OQ), tmx, one);
    const __m512i last = _mm512_set1_epi32(n - 1), zero = _mm512_setzero_si512();
    ok &= static_cast<__mmask16>(~(_mm512_cmpgt_epi32_mask(fl, last) | _mm512_cmpgt_epi32_mask(zero, ce)));
    lo = _mm512_max_epi32(fl, zero);
    hi = _mm512_min_epi32(ce, last);
}

// The x, y, z of corner k of sixteen triangles (triangle ids[j] in lane j) without gathers,
// which are slow on some CPUs (a 16-lane gather took 6 times as long as these loads and
// shuffles on the EPYC): each vertex is one 16-byte load of (previous z, x, y, z), four
// vertices per 512-bit register, then a 4x4 transpose in each 128-bit lane. Vertex 0 is
// read alone (nothing before it).
// Triangle of lane j: ids[j] (Ids = const int32_t*) or first + min(j, last) (contiguous).
struct Contiguous {
    int64_t first;
    int last;
    int64_t operator[](int j) const { return first + std::min(j, last); }
};

template <class Ids>
SIM3DR_TARGET_AVX512 inline void corners16(const float* V, const int32_t* T, const Ids& ids,
                                           int k, __m512& x, __m512& y, __m512& z) {
    auto vertex = [&](int j) SIM3DR_TARGET_AVX512 {
        const int64_t i = T[3 * static_cast<int64_t>(ids[j]) + k];
        return i > 0 ? _mm_loadu_ps(V + 3 * i - 1) : _mm_setr_ps(0.0f, V[0], V[1], V[2]);
    };
    __m512 q[4];
    for (int g = 0; g < 4; ++g) {  // q[g], 128-bit lane L: triangle 4 L + g
        __m512 r = _mm512_castps128_ps512(vertex(g));
        r = _mm512_insertf32x4(r, vertex(4 + g), 1);
        r = _mm512_insertf32x4(r, vertex(8 + g), 2);
        q[g] = _mm512_insertf32x4(r, vertex(12 + g), 3);
    }
    const __m512 a = _mm512_unpacklo_ps(q[0], q[1]), b = _mm512_unpackhi_ps(q[0], q[1]);
    const __m512 c = _mm512_unpacklo_ps(q[2], q[3]), d = _mm512_unpackhi_ps(q[2], q[3]);
    x = _mm512_shuffle_ps(a, c, 0xEE);  // element 1 of each vertex: x
    y = _mm512_shuffle_ps(b, d, 0x44);  // element 2: y
    z = _mm512_shuffle_ps(b, d, 0xEE);  // element 3: z
}

SIM3DR_TARGET_AVX512 inline int setup16(const float* V, const int32_t* T, int32_t* ids, int n,
                                        int h, int w, SetupBatch16& out) {
    for (int j = n; j < 16; ++j) ids[j] = ids[0];  // padding lanes: dropped below
    __m512 x[3], y[3], z[3];
    for (int k = 0; k < 3; ++k) corners16(V, T, ids, k, x[k], y[k], z[k]);
    __mmask16 ok = static_cast<__mmask16>((1u << n) - 1);
    __m512i ylo, yhi, xlo, xhi;
    clip_range16(y[0], y[1], y[2], h, ylo, yhi, ok);
    clip_range16(x[0], x[1], x[2], w, xlo, xhi, ok);
    const __m512 v0x = _mm512_sub_ps(x[2], x[0]), v0y = _mm512_sub_ps(y[2], y[0]);
    const __m512 v1x = _mm512_sub_ps(x[1], x[0]), v1y = _mm512_sub_ps(y[1], y[0]);
    const __m512 d00 = _mm512_add_ps(_mm512_mul_ps(v0x, v0x), _mm512_mul_ps(v0y, v0y));
    const __m512 d01 = _mm512_add_ps(_mm512_mul_ps(v0x, v1x), _mm512_mul_ps(v0y, v1y));
    const __m512 d11 = _mm512_add_ps(_mm512_mul_ps(v1x, v1x), _mm512_mul_ps(v1y, v1y));
    const __m512 den = _mm512_sub_ps(_mm512_mul_ps(d00, d11), _mm512_mul_ps(d01, d01));
    ok &= _mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_NEQ_UQ);  // degenerate: skipped
    _mm512_store_ps(out.p0x, x[0]);
    _mm512_store_ps(out.p0y, y[0]);
    _mm512_store_ps(out.v0x, v0x);
    _mm512_store_ps(out.v0y, v0y);
    _mm512_store_ps(out.v1x, v1x);
    _mm512_store_ps(out.v1y, v1y);
    _mm512_store_ps(out.d00, d00);
    _mm512_store_ps(out.d01, d01);
    _mm512_store_ps(out.d11, d11);
    _mm512_store_ps(out.inv, _mm512_div_ps(_mm512_set1_ps(1.0f), den));
    _mm512_store_ps(out.z0, z[0]);
    _mm512_store_ps(out.z1, z[1]);
    _mm512_store_ps(out.z2, z[2]);
    _mm512_store_si512(out.xmin, xlo);
    _mm512_store_si512(out.xmax, xhi);
    _mm512_store_si512(out.ymin, ylo);
    _mm512_store_si512(out.ymax, yhi);
    return ok;
}

// The band keys of bin_bands for triangles a.. with AVX-512, sixteen at a time (corners
// loaded as in setup16, clip_range16 of their rows); returns where the scalar loop takes
// over. (Storing each triangle's whole setup here for the bands to read instead of
// recomputing it took longer: 56 bytes a triangle is more memory traffic than the loads
// and arithmetic it saves.)
SIM3DR_TARGET_AVX512 int64_t band_keys_avx512(const float* V, const int32_t* T, int64_t a,
                                              int64_t b, int h, int shift, int32_t* first,
                                              int32_t* last) {
    const __m128i sh = _mm_cvtsi32_si128(shift);
    int64_t t = a;
    for (; t + 16 <= b; t += 16) {
        const Contiguous ids{t, 15};
        __m512 x, y[3], z;
        for (int k = 0; k < 3; ++k) corners16(V, T, ids, k, x, y[k], z);
        __mmask16 ok = 0xFFFF;
        __m512i ylo, yhi;
        clip_range16(y[0], y[1], y[2], h, ylo, yhi, ok);
        _mm512_storeu_si512(first + t, _mm512_mask_mov_epi32(_mm512_set1_epi32(1), ok,
                                                             _mm512_sra_epi32(ylo, sh)));
        _mm512_storeu_si512(last + t, _mm512_maskz_mov_epi32(ok, _mm512_sra_epi32(yhi, sh)));
    }
    return t;
}

// Row R (0..3) of a 4x4 block at `off`: the lanes of k's row R take depth z, the triangle
// and u, v (masked stores: the other pixels are not touched).
template <bool UV, int R>
SIM3DR_TARGET_AVX512 inline void put_row512(__mmask16 k, int nrows, int64_t off, __m512 z,
                                            __mmask16 old_unused, __m128i tri, __m512 u,
                                            __m512 v, float* depth, int32_t* index, float* us,
                                            float* vs) {
    // Rows of the block past the triangle's last row can lie past the buffer: never
    // address them (a masked store with an empty mask is not enough: some CPUs fault on
    // the address of a masked extract-to-memory whatever its mask). Within the rows, an
    // empty mask (no pixel won) is a store of nothing, cheaper than a branch.
    (void)old_unused;
    if (R >= nrows) return;
    const __mmask8 kr = static_cast<__mmask8>((k >> (4 * R)) & 0xF);
    _mm_mask_storeu_ps(depth + off, kr, _mm512_extractf32x4_ps(z, R));
    _mm_mask_storeu_epi32(index + off, kr, tri);
    if (UV) {
        _mm_mask_storeu_ps(us + off, kr, _mm512_extractf32x4_ps(u, R));
        _mm_mask_storeu_ps(vs + off, kr, _mm512_extractf32x4_ps(v, R));
    }
}

// raster_deferred with AVX-512: sixteen lanes are four rows by four columns from (xmin,
// ya): one block for triangles up to 4 x 4 candidate pixels, nearly all of a face mesh's.
// (Blocks aligned to multiple-of-4 columns, whose stores the next triangle's loads could
// take without waiting, need 1.7 blocks a triangle and measured slower.) Lanes outside
// [xmin, xmax] x [ya, yb] are masked off; rows past yb are never read or written.
template <bool UV, class S>
SIM3DR_TARGET_AVX512 inline void raster_deferred_avx512(const S& b, int64_t j,
                                                        int32_t tri, int ya, int yb,
                                                        int64_t stride, int y_origin,
                                                        float* depth, int32_t* index,
                                                        float* us, float* vs) {
    // make_setup's dot products, the same float operations
    const float sv0x = b.v0x[j], sv0y = b.v0y[j], sv1x = b.v1x[j], sv1y = b.v1y[j];
    const float sd00 = sv0x * sv0x + sv0y * sv0y, sd01 = sv0x * sv1x + sv0y * sv1y,
                sd11 = sv1x * sv1x + sv1y * sv1y;
    const __m512 p0x = _mm512_set1_ps(b.p0x[j]), p0y = _mm512_set1_ps(b.p0y[j]),
                 v0x = _mm512_set1_ps(sv0x), v0y = _mm512_set1_ps(sv0y),
                 v1x = _mm512_set1_ps(sv1x), v1y = _mm512_set1_ps(sv1y),
                 d00 = _mm512_set1_ps(sd00), d01 = _mm512_set1_ps(sd01),
                 d11 = _mm512_set1_ps(sd11), inv = _mm512_set1_ps(b.inv[j]),
                 z0 = _mm512_set1_ps(b.z0[j]), z1 = _mm512_set1_ps(b.z1[j]),
                 z2 = _mm512_set1_ps(b.z2[j]);
    const int xmin = b.xmin[j], xmax = b.xmax[j];
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    const __m512 lanex = _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    const __m512i laney = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m128i ti = _mm_set1_epi32(tri);
    const __m128 z4 = _mm_setzero_ps();
    for (int y = ya; y <= yb; y += 4) {
        const int nrows = std::min(4, yb - y + 1);
        const unsigned rows = nrows == 4 ? 0xFFFFu : (1u << (4 * nrows)) - 1;
        const __m512 v2y = _mm512_sub_ps(
            _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_set1_epi32(y), laney)), p0y);
        const __m512 a0 = _mm512_mul_ps(v0y, v2y);
        const __m512 a1 = _mm512_mul_ps(v1y, v2y);
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        for (int x0 = xmin; x0 <= xmax; x0 += 4) {
            const unsigned cols = 0xFu >> (3 - std::min(xmax - x0, 3));
            const __mmask16 live = static_cast<__mmask16>(rows & (cols * 0x1111u));
            const __m512 xs = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(x0)), lanex);
            const __m512 v2x = _mm512_sub_ps(xs, p0x);
            const __m512 d02 = _mm512_add_ps(_mm512_mul_ps(v0x, v2x), a0);
            const __m512 d12 = _mm512_add_ps(_mm512_mul_ps(v1x, v2x), a1);
            const __m512 u = _mm512_mul_ps(
                _mm512_sub_ps(_mm512_mul_ps(d11, d02), _mm512_mul_ps(d01, d12)), inv);
            const __m512 v = _mm512_mul_ps(
                _mm512_sub_ps(_mm512_mul_ps(d00, d12), _mm512_mul_ps(d01, d02)), inv);
            __mmask16 k = _mm512_mask_cmp_ps_mask(live, u, zero, _CMP_GE_OQ);
            k = _mm512_mask_cmp_ps_mask(k, v, zero, _CMP_GE_OQ);
            k = _mm512_mask_cmp_ps_mask(k, _mm512_add_ps(u, v), one, _CMP_LT_OQ);
            if (!k) continue;
            const __m512 w0 = _mm512_sub_ps(_mm512_sub_ps(one, u), v);
            const __m512 z = _mm512_add_ps(
                _mm512_add_ps(_mm512_mul_ps(w0, z0), _mm512_mul_ps(v, z1)), _mm512_mul_ps(u, z2));
            const int64_t off = row + x0;
            const float* dp = depth + off;
            __m512 old = _mm512_castps128_ps512(_mm_loadu_ps(dp));
            old = _mm512_insertf32x4(old, nrows > 1 ? _mm_loadu_ps(dp + stride) : z4, 1);
            old = _mm512_insertf32x4(old, nrows > 2 ? _mm_loadu_ps(dp + 2 * stride) : z4, 2);
            old = _mm512_insertf32x4(old, nrows > 3 ? _mm_loadu_ps(dp + 3 * stride) : z4, 3);
            // no branch on the depth test (unpredictable; the stores below are masked)
            k = _mm512_mask_cmp_ps_mask(k, z, old, _CMP_GT_OQ);
            put_row512<UV, 0>(k, nrows, off, z, 0, ti, u, v, depth, index, us, vs);
            put_row512<UV, 1>(k, nrows, off + stride, z, 0, ti, u, v, depth, index, us, vs);
            put_row512<UV, 2>(k, nrows, off + 2 * stride, z, 0, ti, u, v, depth, index, us, vs);
            put_row512<UV, 3>(k, nrows, off + 3 * stride, z, 0, ti, u, v, depth, index, us, vs);
        }
    }
}

// 12-byte masks of the RGB bytes of the pixels in a 4-bit lane mask.
constexpr uint16_t kRgbMask[16] = {0x000, 0x007, 0x038, 0x03F, 0x1C0, 0x1C7, 0x1F8, 0x1FF,
                                   0xE00, 0xE07, 0xE38, 0xE3F, 0xFC0, 0xFC7, 0xFF8, 0xFFF};

// Row R of a 4x4 block: depth as put_row512, and the pixels' bytes (R G B interleaved in
// `rgb`'s low 12 bytes) into the image row.
template <int R>
SIM3DR_TARGET_AVX512 inline void put_rgb_row512(__mmask16 k, int nrows, int64_t off, __m512 z,
                                                __m128i rgb, float* depth, uint8_t* px,
                                                const uint8_t* image_end) {
    if (R >= nrows) return;  // see put_row512
    const unsigned kr = (k >> (4 * R)) & 0xF;  // often 0: a masked store of nothing
    _mm_mask_storeu_ps(depth + off, static_cast<__mmask8>(kr), _mm512_extractf32x4_ps(z, R));
    if (px + 16 <= image_end) {
        _mm_mask_storeu_epi8(px, kRgbMask[kr], rgb);
    } else {  // the image's last bytes: no 16-byte access past its end
        alignas(16) uint8_t b[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(b), rgb);
        for (int j = 0; j < 4; ++j)
            if ((kr >> j) & 1) std::memcpy(px + 3 * j, b + 3 * j, 3);
    }
}

// The deferred kernel's pixels, coloured at once (uint8 RGB, alpha 1: the pixel is
// a255 * (w0 c0 + v c1 + u c2) clamped to [0, 255] and truncated, ShadeU8's operations;
// a later winner overwrites it as the plain loop does). Colours are ready when the bands
// are drawn. Masked byte stores touch only the triangle's pixels.
template <class S>
SIM3DR_TARGET_AVX512 inline void raster_rgb_avx512(const S& b, int64_t j,
                                                   const int32_t* corners, int ya, int yb,
                                                   int64_t stride, int y_origin, float* depth,
                                                   const float* colors, float a255,
                                                   uint8_t* image, int w,
                                                   int h) {
    const uint8_t* image_end = image + static_cast<int64_t>(h) * w * 3;
    // make_setup's dot products, the same float operations
    const float sv0x = b.v0x[j], sv0y = b.v0y[j], sv1x = b.v1x[j], sv1y = b.v1y[j];
    const float sd00 = sv0x * sv0x + sv0y * sv0y, sd01 = sv0x * sv1x + sv0y * sv1y,
                sd11 = sv1x * sv1x + sv1y * sv1y;
    const __m512 p0x = _mm512_set1_ps(b.p0x[j]), p0y = _mm512_set1_ps(b.p0y[j]),
                 v0x = _mm512_set1_ps(sv0x), v0y = _mm512_set1_ps(sv0y),
                 v1x = _mm512_set1_ps(sv1x), v1y = _mm512_set1_ps(sv1y),
                 d00 = _mm512_set1_ps(sd00), d01 = _mm512_set1_ps(sd01),
                 d11 = _mm512_set1_ps(sd11), inv = _mm512_set1_ps(b.inv[j]),
                 z0 = _mm512_set1_ps(b.z0[j]), z1 = _mm512_set1_ps(b.z1[j]),
                 z2 = _mm512_set1_ps(b.z2[j]);
    const float* c0 = colors + 3 * static_cast<int64_t>(corners[0]);
    const float* c1 = colors + 3 * static_cast<int64_t>(corners[1]);
    const float* c2 = colors + 3 * static_cast<int64_t>(corners[2]);
    const int xmin = b.xmin[j], xmax = b.xmax[j];
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    const __m512 top = _mm512_set1_ps(255.0f), a = _mm512_set1_ps(a255);
    const __m512 lanex = _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    const __m512i laney = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    // bytes 0..7: R G pairs of four pixels, 8..11: their B -> R G B R G B ...
    const __m128i interleave = _mm_setr_epi8(0, 1, 8, 2, 3, 9, 4, 5, 10, 6, 7, 11, -1, -1, -1, -1);
    const __m128 z4 = _mm_setzero_ps();
    for (int y = ya; y <= yb; y += 4) {
        const int nrows = std::min(4, yb - y + 1);
        const unsigned rows = nrows == 4 ? 0xFFFFu : (1u << (4 * nrows)) - 1;
        const __m512 v2y = _mm512_sub_ps(
            _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_set1_epi32(y), laney)), p0y);
        const __m512 a0 = _mm512_mul_ps(v0y, v2y);
        const __m512 a1 = _mm512_mul_ps(v1y, v2y);
        const int64_t row = static_cast<int64_t>(y - y_origin) * stride;
        for (int x0 = xmin; x0 <= xmax; x0 += 4) {
            const unsigned cols = 0xFu >> (3 - std::min(xmax - x0, 3));
            const __mmask16 live = static_cast<__mmask16>(rows & (cols * 0x1111u));
            const __m512 xs = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(x0)), lanex);
            const __m512 v2x = _mm512_sub_ps(xs, p0x);
            const __m512 d02 = _mm512_add_ps(_mm512_mul_ps(v0x, v2x), a0);
            const __m512 d12 = _mm512_add_ps(_mm512_mul_ps(v1x, v2x), a1);
            const __m512 u = _mm512_mul_ps(
                _mm512_sub_ps(_mm512_mul_ps(d11, d02), _mm512_mul_ps(d01, d12)), inv);
            const __m512 v = _mm512_mul_ps(
                _mm512_sub_ps(_mm512_mul_ps(d00, d12), _mm512_mul_ps(d01, d02)), inv);
            __mmask16 k = _mm512_mask_cmp_ps_mask(live, u, zero, _CMP_GE_OQ);
            k = _mm512_mask_cmp_ps_mask(k, v, zero, _CMP_GE_OQ);
            k = _mm512_mask_cmp_ps_mask(k, _mm512_add_ps(u, v), one, _CMP_LT_OQ);
            if (!k) continue;
            const __m512 w0 = _mm512_sub_ps(_mm512_sub_ps(one, u), v);
            const __m512 z = _mm512_add_ps(
                _mm512_add_ps(_mm512_mul_ps(w0, z0), _mm512_mul_ps(v, z1)), _mm512_mul_ps(u, z2));
            const int64_t off = row + x0;
            const float* dp = depth + off;
            __m512 old = _mm512_castps128_ps512(_mm_loadu_ps(dp));
            old = _mm512_insertf32x4(old, nrows > 1 ? _mm_loadu_ps(dp + stride) : z4, 1);
            old = _mm512_insertf32x4(old, nrows > 2 ? _mm_loadu_ps(dp + 2 * stride) : z4, 2);
            old = _mm512_insertf32x4(old, nrows > 3 ? _mm_loadu_ps(dp + 3 * stride) : z4, 3);
            // no branch on the depth test (unpredictable; the stores below are masked)
            k = _mm512_mask_cmp_ps_mask(k, z, old, _CMP_GT_OQ);
            __m128i ch[3];
            for (int c = 0; c < 3; ++c) {
                const __m512 col = _mm512_add_ps(
                    _mm512_add_ps(_mm512_mul_ps(w0, _mm512_set1_ps(c0[c])),
                                  _mm512_mul_ps(v, _mm512_set1_ps(c1[c]))),
                    _mm512_mul_ps(u, _mm512_set1_ps(c2[c])));
                // a255 * col clamped to [0, 255] (NaN -> 0), truncated, one byte per lane
                const __m512 val = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(a, col), zero), top);
                ch[c] = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(val));
            }
            const __m128i rg_lo = _mm_unpacklo_epi8(ch[0], ch[1]), rg_hi = _mm_unpackhi_epi8(ch[0], ch[1]);
            uint8_t* px = image + (static_cast<int64_t>(y) * w + x0) * 3;
            const int64_t prow = static_cast<int64_t>(w) * 3;
            put_rgb_row512<0>(k, nrows, off, z,
                              _mm_shuffle_epi8(_mm_unpacklo_epi64(rg_lo, ch[2]), interleave),
                              depth, px, image_end);
            put_rgb_row512<1>(k, nrows, off + stride, z,
                              _mm_shuffle_epi8(_mm_unpackhi_epi64(rg_lo, _mm_slli_si128(ch[2], 4)), interleave),
                              depth, px + prow, image_end);
            put_rgb_row512<2>(k, nrows, off + 2 * stride, z,
                              _mm_shuffle_epi8(_mm_unpacklo_epi64(rg_hi, _mm_srli_si128(ch[2], 8)), interleave),
                              depth, px + 2 * prow, image_end);
            put_rgb_row512<3>(k, nrows, off + 3 * stride, z,
                              _mm_shuffle_epi8(_mm_unpackhi_epi64(rg_hi, _mm_srli_si128(ch[2], 4)), interleave),
                              depth, px + 3 * prow, image_end);
        }
    }
}

SIM3DR_TARGET_AVX512 void rgb_triangles_avx512(const BandPass& b, int band, int y0, int y1,
                                               const float* colors, float a255,
                                               uint8_t* image) {
    // As deferred_triangles_avx2, sixteen triangles a batch.
    alignas(64) int32_t ids[2][16];
    SetupBatch16 batch[2];
    IdStream stream(b, band);
    int n = stream.next(ids[0], 16);
    if (!n) return;
    unsigned m = static_cast<unsigned>(setup16(b.V, b.T, ids[0], n, b.h, b.w, batch[0]));
    for (int cur = 0;; cur ^= 1) {
        const int n2 = stream.next(ids[cur ^ 1], 16);
        const unsigned m2 =
            n2 ? static_cast<unsigned>(setup16(b.V, b.T, ids[cur ^ 1], n2, b.h, b.w, batch[cur ^ 1])) : 0;
        while (m) {
            const int j = __builtin_ctz(m);
            m &= m - 1;
            raster_rgb_avx512(batch[cur], j, b.T + 3 * static_cast<int64_t>(ids[cur][j]),
                              std::max(y0, batch[cur].ymin[j]), std::min(y1, batch[cur].ymax[j]),
                              b.stride, b.y_origin, b.dscr, colors, a255, image, b.w, b.h);
        }
        if (!n2) return;
        m = m2;
    }
}

template <bool UV>
SIM3DR_TARGET_AVX512 void deferred_triangles_avx512(const BandPass& b, int band, int y0, int y1) {
    alignas(64) int32_t ids[2][16];
    SetupBatch16 batch[2];
    IdStream stream(b, band);
    int n = stream.next(ids[0], 16);
    if (!n) return;
    unsigned m = static_cast<unsigned>(setup16(b.V, b.T, ids[0], n, b.h, b.w, batch[0]));
    for (int cur = 0;; cur ^= 1) {
        const int n2 = stream.next(ids[cur ^ 1], 16);
        const unsigned m2 =
            n2 ? static_cast<unsigned>(setup16(b.V, b.T, ids[cur ^ 1], n2, b.h, b.w, batch[cur ^ 1])) : 0;
        while (m) {
            const int j = __builtin_ctz(m);
            m &= m - 1;
            raster_deferred_avx512<UV>(batch[cur], j, ids[cur][j], std::max(y0, batch[cur].ymin[j]),
                                       std::min(y1, batch[cur].ymax[j]), b.stride, b.y_origin,
                                       b.dscr, b.iscr, b.us, b.vs);
        }
        if (!n2) return;
        m = m2;
    }
}
#endif

// Channel-count dispatch (compile time for 1, 3 and 4).
template <class Fn>
void with_channels(int channels, Fn fn) {
    switch (channels) {
        case 1: fn(std::integral_constant<int, 1>()); break;
        case 3: fn(std::integral_constant<int, 3>()); break;
        case 4: fn(std::integral_constant<int, 4>()); break;
        default: fn(std::integral_constant<int, 0>()); break;
    }
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

// Binning tasks of phase 0: one per chunk of triangles (none with one band).
struct BinTasks {
    Binning& bins;
    int count() const { return bins.plan.nbands > 1 ? bins.plan.nchunks : 0; }
    void run(int k) const { bins.bin_bands(k); }
};

// Rasterisation of triangles into an image by bands, with colours per vertex.
template <class Image>
int rasterize_job(const float* V, const int32_t* T, int64_t ntri, const float* colors,
                  int channels, Image* image, int h, int w, float* depth, float alpha,
                  int num_threads) {
    if (ntri <= 0 || h <= 0 || w <= 0) return 0;
    Scratch& sc = t_scratch;
    TrimOnExit trim;
    Plan plan = plan_raster(num_threads, ntri, h);
    plan_chunks(plan, ntri);
    Binning bins{V, T, ntri, h, w, plan, {}};
    bins.prepare(sc);
    BinTasks bin_tasks{bins};
    BandPass band{V, T, ntri, h, w, &bins, plan.nbands, plan.band_shift};
    constexpr bool kU8 = std::is_same<Image, uint8_t>::value;
    const float keep = 1.0f - alpha;
    band.stride = (int64_t(w) + 6) & ~int64_t(3);
    band.depth = depth;
    if constexpr (kU8) if (keep == 0.0f) {
        // Deferred: depth, winner and barycentrics per pixel, then the colours.
        const float a255 = alpha * 255.0f;
        int used = 0;
        with_channels(channels, [&](auto C) {
            auto shade = [&](const BandPass& b, int y0, int y1) {
                shade_rows<decltype(C)::value>(colors, channels, T, y0, y1, w, b.stride,
                                               b.y_origin, b.iscr, b.us, b.vs, a255, image);
            };
            auto task = [&](int phase, int k) {
                if (phase == 0) return bin_tasks.run(k);
                if (decltype(C)::value == 3)
                    band.rgb(k, colors, a255, image);
                else
                    band.template deferred<true>(k, shade);
            };
            used = detail::run_phases(plan.nt, {bin_tasks.count(), plan.nbands}, task);
        });
        return used;
    }
    int used = 0;
    auto go = [&](const auto& shade) {
        auto task = [&](int phase, int k) {
            if (phase == 0) return bin_tasks.run(k);
            band.immediate(k, shade);
        };
        used = detail::run_phases(plan.nt, {bin_tasks.count(), plan.nbands}, task);
    };
    if constexpr (kU8) {
        with_channels(channels, [&](auto C) {
            go(ShadeU8<decltype(C)::value>{colors, channels, image, keep, alpha * 255.0f});
        });
    } else {
        with_channels(channels, [&](auto C) {
            go(ShadeF32<decltype(C)::value>{colors, channels, image, keep, alpha});
        });
    }
    return used;
}

}  // namespace

// ---------------------------------------------------------------------------------
// Public entry points

namespace {
#ifdef SIM3DR_AVX2
SIM3DR_TARGET_AVX2 void index_range_avx2(const int32_t* a, int64_t n, int32_t& lo, int32_t& hi) {
    __m256i mn = _mm256_set1_epi32(lo), mx = _mm256_set1_epi32(hi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
        mn = _mm256_min_epi32(mn, x);
        mx = _mm256_max_epi32(mx, x);
    }
    alignas(32) int32_t l[8], h[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), mn);
    _mm256_store_si256(reinterpret_cast<__m256i*>(h), mx);
    for (int k = 0; k < 8; ++k) {
        lo = std::min(lo, l[k]);
        hi = std::max(hi, h[k]);
    }
    for (; i < n; ++i) {
        lo = std::min(lo, a[i]);
        hi = std::max(hi, a[i]);
    }
}
#endif
}  // namespace

void index_range(const int32_t* values, int64_t n, int32_t* lo, int32_t* hi) {
    int32_t l = INT32_MAX, h = INT32_MIN;
#ifdef SIM3DR_AVX2
    if (g_simd_level.load(std::memory_order_relaxed) >= 2) {
        index_range_avx2(values, n, l, h);
        *lo = l;
        *hi = h;
        return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) {
        l = std::min(l, values[i]);
        h = std::max(h, values[i]);
    }
    *lo = l;
    *hi = h;
}

bool all_finite(const float* values, int64_t n) {
    // a float is finite unless its exponent bits are all ones; blocks without early exit
    // (the compiler runs them several floats at a time)
    int64_t i = 0;
    while (i < n) {
        const int64_t e = std::min(n, i + 4096);
        uint32_t bad = 0;
        for (; i < e; ++i) {
            uint32_t u;
            std::memcpy(&u, values + i, sizeof u);
            bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad) return false;
    }
    return true;
}

void get_normal(const float* vertices, int64_t nver, const int32_t* triangles,
                int64_t ntri, float* normals, int num_threads) {
    if (nver <= 0) return;
    Scratch& sc = t_scratch;
    TrimOnExit trim;
    Plan plan;
    plan.nt = ntri >= 256 ? resolve_threads(num_threads) : 1;
    plan_ranges(plan, nver);
    const int nr = normal_ranges(plan);
    NormalPass np{vertices, nver, triangles, ntri, nr, acc_buffer(sc.acc, nver), normals};
    if (nr > 1) np.groups = sc.group_bounds.get(static_cast<size_t>(2 * group_count(ntri)));
    // phase 0: group bounds (ranged only); phase 1: each range of vertices
    auto task = [&](int phase, int k) {
        if (phase == 0) return np.bound_groups(k, nr);
        np.run(k);
    };
    detail::run_phases(std::min(plan.nt, nr), {nr > 1 ? nr : 0, nr}, task);
}

void light_colors(const float* vertices, int64_t nver, const int32_t* triangles,
                  int64_t ntri, const LightParams& p, float* light, int num_threads) {
    if (nver <= 0) return;
    Scratch& sc = t_scratch;
    TrimOnExit trim;
    Plan plan;
    plan.nt = ntri >= 256 ? resolve_threads(num_threads) : 1;
    plan_ranges(plan, nver);
    float* normals = sc.normals.get(static_cast<size_t>(3 * nver));
    const int nr = plan.nranges, nn = normal_ranges(plan);
    const int serial = nn == 1 ? 1 : 0;  // one task sums all normals in phase 0
    NormalPass np{vertices, nver, triangles, ntri, nn, acc_buffer(sc.acc, nver), normals};
    float* bounds = sc.bounds.get(static_cast<size_t>(6 * nr));
    if (nn > 1) np.groups = sc.group_bounds.get(static_cast<size_t>(2 * group_count(ntri)));
    // phase 0: the serial normals, bounds of each range of vertices (and a part of the
    // group bounds); phase 1: each range's ranged normals and light
    auto task = [&](int phase, int k) {
        if (phase == 0 && k < serial) return np.run(0);
        k -= phase == 0 ? serial : 0;
        const int64_t a = nver * k / nr, b = nver * (k + 1) / nr;
        if (phase == 0) {
            detail::init_bounds(bounds + 6 * k, bounds + 6 * k + 3);
            detail::vertex_bounds(vertices, a, b, bounds + 6 * k, bounds + 6 * k + 3);
            if (nn > 1) np.bound_groups(k, nr);
            return;
        }
        if (nn > 1) np.run(k);
        detail::light_range(vertices, normals, a, b, p, detail::fold_bounds(bounds, nr), light);
    };
    detail::run_phases(std::min(plan.nt, nr), {serial + nr, nr}, task);
}

int render_lit_u8(const float* vertices, int64_t nver, const int32_t* triangles,
                  int64_t ntri, const LightParams& p, const uint8_t* background,
                  uint8_t* image, int h, int w, float* depth, float alpha, int num_threads) {
    if (h <= 0 || w <= 0) return 0;
    if (nver <= 0 || ntri <= 0) {
        if (background) std::memcpy(image, background, static_cast<size_t>(h) * w * 3);
        return 0;
    }
    Scratch& sc = t_scratch;
    TrimOnExit trim;
    Plan plan = plan_raster(num_threads, ntri, h);
    plan_ranges(plan, nver);
    plan_chunks(plan, ntri);
    Binning bins{vertices, triangles, ntri, h, w, plan, {}};
    bins.prepare(sc);
    BinTasks bin_tasks{bins};
    float* normals = sc.normals.get(static_cast<size_t>(3 * nver));
    float* colors = sc.colors.get(static_cast<size_t>(3 * nver));
    const int nr = plan.nranges, nb = plan.nbands, nn = normal_ranges(plan);
    const int serial = nn == 1 ? 1 : 0;  // one task sums all normals in phase 0
    NormalPass np{vertices, nver, triangles, ntri, nn, acc_buffer(sc.acc, nver), normals};
    float* bounds = sc.bounds.get(static_cast<size_t>(6 * nr));
    if (nn > 1) np.groups = sc.group_bounds.get(static_cast<size_t>(2 * group_count(ntri)));
    BandPass band{vertices, triangles, ntri, h, w, &bins, nb, plan.band_shift};
    band.stride = (int64_t(w) + 6) & ~int64_t(3);
    band.depth = depth;
    band.background = background;
    band.canvas = image;
    const float keep = 1.0f - alpha, a255 = alpha * 255.0f;
    const ShadeU8<3> immediate{colors, 3, image, keep, a255};
    const bool fresh = depth == nullptr && keep != 0.0f;
    if (fresh) band.depth = sc.depth.get(static_cast<size_t>(int64_t(h) * w));
    // Phase 0: the normals (one task, with few threads), vertex bounds (ranges of
    // vertices) and binning (chunks of triangles); phase 1: the (ranged) normals and the
    // light of each range of vertices; phase 2: the bands.
    auto task = [&](int phase, int k) {
        if (phase == 0) {
            if (k < serial) return np.run(0);
            k -= serial;
            if (k >= nr) return bin_tasks.run(k - nr);
            const int64_t a = nver * k / nr, b = nver * (k + 1) / nr;
            detail::init_bounds(bounds + 6 * k, bounds + 6 * k + 3);
            detail::vertex_bounds(vertices, a, b, bounds + 6 * k, bounds + 6 * k + 3);
            if (nn > 1) np.bound_groups(k, nr);
        } else if (phase == 1) {
            const int64_t a = nver * k / nr, b = nver * (k + 1) / nr;
            if (nn > 1) np.run(k);
            detail::light_range(vertices, normals, a, b, p, detail::fold_bounds(bounds, nr),
                                colors);
        } else if (keep == 0.0f) {
            band.rgb(k, colors, a255, image);
        } else {
            band.immediate(k, immediate, fresh);
        }
    };
    return detail::run_phases(plan.nt, {serial + nr + bin_tasks.count(), nr, nb}, task);
}

int rasterize_u8(const float* vertices, const int32_t* triangles, int64_t ntri,
                 const float* colors, int channels, uint8_t* image, int h, int w,
                 float* depth, float alpha, int num_threads) {
    return rasterize_job(vertices, triangles, ntri, colors, channels, image, h, w, depth,
                         alpha, num_threads);
}

int rasterize_f32(const float* vertices, const int32_t* triangles, int64_t ntri,
                  const float* colors, int channels, float* image, int h, int w,
                  float* depth, float alpha, int num_threads) {
    return rasterize_job(vertices, triangles, ntri, colors, channels, image, h, w, depth,
                         alpha, num_threads);
}

int rasterize_index(const float* vertices, const int32_t* triangles, int64_t ntri,
                    int h, int w, float* depth, int32_t* tri_index, int num_threads) {
    if (ntri <= 0 || h <= 0 || w <= 0) return 0;
    Scratch& sc = t_scratch;
    TrimOnExit trim;
    Plan plan = plan_raster(num_threads, ntri, h);
    plan_chunks(plan, ntri);
    Binning bins{vertices, triangles, ntri, h, w, plan, {}};
    bins.prepare(sc);
    BinTasks bin_tasks{bins};
    BandPass band{vertices, triangles, ntri, h, w, &bins, plan.nbands, plan.band_shift};
    band.stride = (int64_t(w) + 6) & ~int64_t(3);
    band.depth = depth;
    auto copy = [&](const BandPass& b, int y0, int y1) {
        for (int y = y0; y <= y1; ++y) {
            const int32_t* src = b.iscr + (y - y0) * b.stride;
            int32_t* dst = tri_index + static_cast<int64_t>(y) * w;
            for (int x = 0; x < w; ++x)
                if (src[x] >= 0) dst[x] = src[x];
        }
    };
    auto task = [&](int phase, int k) {
        if (phase == 0) return bin_tasks.run(k);
        band.deferred<false>(k, copy);
    };
    return detail::run_phases(plan.nt, {bin_tasks.count(), plan.nbands}, task);
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
