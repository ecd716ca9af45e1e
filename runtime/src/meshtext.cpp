// OBJ text for runtime.mesh_io.write_obj (see meshtext.h).
//
// "%.{P}g" of a double x != 0 needs X = floor(log10|x|) of the rounded value and the P digits
// D = round(|x| * 10**(P-1-X)), 10**(P-1) <= D < 10**P. The fast path takes k = P-1-X within
// -22..22, where 10**|k| is an exact double, so y = |x| * 10**k (or |x| / 10**-k) is the exact
// value z rounded once. Rounding is monotonic and, as y <= 10**9 < 2**31, every integer and every
// n + 1/2 near y is a double: comparing y with 10**(P-1), 10**P, n and n + 1/2 answers as the
// exact z would, except where y is exactly n + 1/2; there the rounding error, exact with a fused
// multiply-add (a product's error, a quotient's remainder), tells a tie (to even, as printf)
// from a value above or below. X is estimated from the binary exponent and a table of powers of
// ten (rounded beyond 1e22): one off at most, which y then shows and one step corrects.
// Subnormals and magnitudes that would need 10**|k| beyond 1e22 (below about 1e-13 or from
// about 1e30 for P = 9) take std::to_chars(general, precision), which the standard defines as
// printf's %.{precision}g in the "C" locale, exactly rounded (the slow path: rare in a mesh).
//
// Integers: eight digits at once in a 64-bit word (SWAR), leading zeros shifted out.
#include "meshtext.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#ifdef _WIN32
#include <io.h>
#else
#include <unistd.h>
#endif

namespace meshtext {
namespace {

constexpr double kPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

constexpr uint64_t kIntPow10[10] = {1,      10,      100,      1000,      10000,
                                    100000, 1000000, 10000000, 100000000, 1000000000};

struct DigitPairs {
  char text[200];
  constexpr DigitPairs() : text() {
    for (int i = 0; i < 100; ++i) {
      text[2 * i] = static_cast<char>('0' + i / 10);
      text[2 * i + 1] = static_cast<char>('0' + i % 10);
    }
  }
};
constexpr DigitPairs kPairs;

inline void put2(char* out, unsigned n) { std::memcpy(out, kPairs.text + 2 * n, 2); }

char* format_g_exact(char* out, double x, int precision) {
  std::to_chars_result r = std::to_chars(out, out + 32, x, std::chars_format::general, precision);
  return r.ptr;  // 32 bytes hold any "%.9g" (at most 17), so no error is possible
}

// fl(10**i) for i = -22..31 at kTens[i + 22] (correctly rounded literals).
constexpr double kTens[54] = {
    1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13,
    1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3,
    1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
    1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
    1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27,
    1e28, 1e29, 1e30, 1e31};

// The nine ASCII digits of d < 10**9, first digit first: d's first digit, and the other eight
// as bytes of a little-endian word, with their count of trailing zeros ("0" digits).
struct NineDigits {
  char first;
  uint64_t rest;  // ASCII
  int trailing_zeros;
};

// The eight decimal digits of d < 10**8 (leading zeros included) as the bytes 0-9 of a word,
// the first digit lowest: in registers (four 16-bit lanes, then eight bytes), as digits written
// byte by byte to memory and read back as words would stall store forwarding.
inline uint64_t eight_digits(uint32_t d) {
  uint64_t v = (d / 10000) | (static_cast<uint64_t>(d % 10000) << 32);  // two 4-digit lanes
  uint64_t q = ((v * 10486) >> 20) & 0x0000007F0000007FULL;  // each lane / 100 (exact below 10**4)
  v = q | ((v - q * 100) << 16);  // four 2-digit lanes
  q = ((v * 103) >> 10) & 0x000F000F000F000FULL;  // each lane / 10 (exact below 100)
  return q | ((v - q * 10) << 8);
}

constexpr uint64_t kAsciiZeros = 0x3030303030303030ULL;

inline NineDigits nine_digits(uint32_t d) {
  const uint64_t v = eight_digits(d % 100000000);
  const int zeros = v == 0 ? 8 : __builtin_clzll(v) / 8;
  return {static_cast<char>('0' + d / 100000000), v | kAsciiZeros, zeros};
}

inline void store8(char* out, uint64_t little_endian) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  little_endian = __builtin_bswap64(little_endian);
#endif
  std::memcpy(out, &little_endian, 8);
}

// y = a * 10**k for -22 <= k <= 22: the exact value rounded once.
inline double scaled(double a, int k) { return k >= 0 ? a * kPow10[k] : a / kPow10[-k]; }

template <int P>
char* format_g_fast(char* out, double x) {
  static_assert(1 <= P && P <= 9, "10**P must stay far below 2**31");
  constexpr uint32_t lo = static_cast<uint32_t>(kIntPow10[P - 1]), hi = static_cast<uint32_t>(kIntPow10[P]);
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const bool negative = bits >> 63;
  const int biased = static_cast<int>((bits >> 52) & 0x7FF);
  if ((bits << 1) == 0) {  // +-0
    out[0] = '-';
    out[negative] = '0';
    return out + negative + 1;
  }
  // 2**E <= |x| < 2**(E+1): floor(log10|x|) is floor(E * log10(2)) or one more.
  const int E = biased - 1023;
  int X = (E * 78913) >> 18;  // floor(E * log10(2)), exact for |E| <= 1100
  if (X < P - 23 || X > P + 20) return format_g_exact(out, x, P);  // 10**k inexact; subnormals (E = -1023)
  const double a = std::fabs(x);
  X += a >= kTens[X + 1 + 22];  // (a power beyond 1e22 is rounded: X may be one off, corrected below)
  int k = P - 1 - X;
  double y = scaled(a, k);
  if (y >= hi) {  // X one too small, or y is 10**P rounded up from 10**P - 1/2 or more
    if (k == -22) return format_g_exact(out, x, P);
    y = scaled(a, --k);
    ++X;
  } else if (y < lo) {  // X one too large (a = fl(10**X) < 10**X, then rounded below 10**(P-1))
    if (k == 22) return format_g_exact(out, x, P);
    y = scaled(a, ++k);
    --X;
  }
  // 10**(P-1) - 1/20 < y <= 10**P here (y below 10**(P-1) only after the first correction)
  uint32_t d = static_cast<uint32_t>(y);  // floor (y > 0)
  const double fraction = y - static_cast<double>(d);  // exact
  if (fraction == 0.5) {
    // A tie, or the exact value rounded onto one: the rounding error, exact with a fused
    // multiply-add (the error of a product, the remainder of a quotient), says which.
    const double above = k >= 0 ? std::fma(a, kPow10[k], -y) : -std::fma(y, kPow10[-k], -a);
    d += above > 0 || (above == 0 && (d & 1));  // ties to even
  } else {
    d += fraction > 0.5;
  }
  if (d >= hi) {  // 9.9999999996 -> 10.0000000
    d = lo;
    ++X;
  }
  const NineDigits n = nine_digits(d * static_cast<uint32_t>(kIntPow10[9 - P]));
  const int shown = 9 - n.trailing_zeros;  // significant digits without the trailing zeros
  out[0] = '-';
  out += negative;
  if (X < -4 || X >= P) {  // d.ddde+XX
    out[0] = n.first;
    out[1] = '.';
    store8(out + 2, n.rest);
    out += shown > 1 ? shown + 1 : 1;
    const unsigned e = static_cast<unsigned>(X < 0 ? -X : X);  // < 100 in the fast range
    out[0] = 'e';
    out[1] = X < 0 ? '-' : '+';
    put2(out + 2, e);
    return out + 4;
  }
  if (X >= 0) {  // ddd.ddd
    out[0] = n.first;
    store8(out + 1, n.rest);
    if (shown <= X + 1) return out + X + 1;
    out[X + 1] = '.';
    store8(out + X + 2, n.rest >> (8 * X));  // (X <= 7 here)
    return out + shown + 1;
  }
  // 0.000ddd
  std::memcpy(out, "0.000000", 8);
  out += 1 - X;  // "0." and -X-1 zeros
  out[0] = n.first;
  store8(out + 1, n.rest);
  return out + shown;
}

using Formatter = char* (*)(char*, double);
constexpr Formatter kFormatters[10] = {nullptr,          format_g_fast<1>, format_g_fast<2>, format_g_fast<3>,
                                       format_g_fast<4>, format_g_fast<5>, format_g_fast<6>, format_g_fast<7>,
                                       format_g_fast<8>, format_g_fast<9>};

// Decimal digits of u (u >= 1).
inline int digit_count(uint64_t u) {
  int n = 1;
  while (u >= 10000) {
    u /= 10000;
    n += 4;
  }
  return n + (u >= 10) + (u >= 100) + (u >= 1000);
}

// " %d" of u (u >= 1).
inline char* put_index(char* out, uint64_t u) {
  *out++ = ' ';
  if (u < 100000000) {  // the eight digits without the leading zeros, no branch
    const uint64_t v = eight_digits(static_cast<uint32_t>(u));
    const int leading = __builtin_ctzll(v) / 8;  // (v != 0: u >= 1)
    store8(out, (v | kAsciiZeros) >> (8 * leading));
    return out + 8 - leading;
  }
  char* const end = out + digit_count(u);
  char* p = end;
  while (u >= 100) {
    p -= 2;
    put2(p, static_cast<unsigned>(u % 100));
    u /= 100;
  }
  if (u >= 10) {
    put2(p - 2, static_cast<unsigned>(u));
  } else {
    p[-1] = static_cast<char>('0' + u);
  }
  return end;
}

template <typename V>
char* vertex_lines(char* out, const V* v, const double* colors, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    out[0] = 'v';
    ++out;
    for (int j = 0; j < 3; ++j) {
      *out++ = ' ';
      out = format_g_fast<9>(out, static_cast<double>(v[3 * i + j]));
    }
    if (colors) {
      for (int j = 0; j < 3; ++j) {
        *out++ = ' ';
        out = format_g_fast<6>(out, colors[3 * i + j]);
      }
    }
    *out++ = '\n';
  }
  return out;
}

template <typename T>
char* face_lines(char* out, const T* t, int64_t nver, int64_t begin, int64_t end) {
  // The buffer's room assumes indices below nver: checked (a negative one is huge as uint64_t).
  const uint64_t count = static_cast<uint64_t>(nver);
  for (int64_t i = 3 * begin; i < 3 * end; i += 3) {
    const uint64_t a = static_cast<uint64_t>(t[i]), b = static_cast<uint64_t>(t[i + 1]),
                   c = static_cast<uint64_t>(t[i + 2]);
    if (a >= count || b >= count || c >= count) throw std::out_of_range("triangle index out of range");
    out[0] = 'f';
    out = put_index(out + 1, a + 1);
    out = put_index(out, b + 1);
    out = put_index(out, c + 1);
    *out++ = '\n';
  }
  return out;
}

std::size_t vertex_line_bound(const Mesh& mesh) {
  return 2 + 3 * (1 + max_g_length(9)) + (mesh.colors ? 3 * (1 + max_g_length(6)) : 0);
}

std::size_t face_line_bound(const Mesh& mesh) {
  return 2 + 3 * (1 + (mesh.nver < 1 ? 1 : digit_count(static_cast<uint64_t>(mesh.nver))));  // 1-based
}

std::size_t line_bound(const Mesh& mesh) {
  const std::size_t v = vertex_line_bound(mesh), f = face_line_bound(mesh);
  return v > f ? v : f;
}

// Lines begin..end-1 (vertex lines, then face lines) at out; returns the end.
char* lines(char* out, const Mesh& mesh, int64_t begin, int64_t end) {
  if (begin < mesh.nver) {
    const int64_t stop = end < mesh.nver ? end : mesh.nver;
    out = mesh.vertices32 ? vertex_lines(out, mesh.vertices32, mesh.colors, begin, stop)
                          : vertex_lines(out, mesh.vertices64, mesh.colors, begin, stop);
    begin = stop;
  }
  if (begin < end) {
    out = mesh.triangles32 ? face_lines(out, mesh.triangles32, mesh.nver, begin - mesh.nver, end - mesh.nver)
                           : face_lines(out, mesh.triangles64, mesh.nver, begin - mesh.nver, end - mesh.nver);
  }
  return out;
}

// write(2) of all n bytes (again after a signal or a short write): 0, or the errno.
int write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
#ifdef _WIN32
    const auto done = ::_write(fd, p, static_cast<unsigned>(n < (1u << 30) ? n : (1u << 30)));
#else
    const auto done = ::write(fd, p, n);
#endif
    if (done < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += done;
    n -= static_cast<std::size_t>(done);
  }
  return 0;
}

// The text in chunks of `per_chunk` lines; thread t of T formats chunks t, t + T, ... into its
// own buffer and writes each in its turn (chunk j after chunk j - 1), so that formatting runs in
// parallel and overlaps the writes, and the file is the same whatever the threads.
class Pipeline {
 public:
  Pipeline(int fd, const Mesh& mesh) : fd_(fd), mesh_(mesh) {
    const int64_t total = mesh.nver + mesh.ntri;
    const int64_t per_chunk = static_cast<int64_t>((kChunkBytes - kSlack) / line_bound(mesh));
    per_chunk_ = per_chunk > 0 ? per_chunk : 1;
    chunks_ = (total + per_chunk_ - 1) / per_chunk_;
  }

  int64_t chunks() const { return chunks_; }

  void run(int t, int T) noexcept {
    try {
      // (not zeroed: only what is formatted is written)
      const std::size_t size = static_cast<std::size_t>(per_chunk_) * line_bound(mesh_) + kSlack;
      const std::unique_ptr<char[]> buffer(new char[size]);
      const int64_t total = mesh_.nver + mesh_.ntri;
      for (int64_t j = t; j < chunks_; j += T) {
        const int64_t end = (j + 1) * per_chunk_ < total ? (j + 1) * per_chunk_ : total;
        const char* const text_end = lines(buffer.get(), mesh_, j * per_chunk_, end);
        const std::size_t n = static_cast<std::size_t>(text_end - buffer.get());
        std::unique_lock<std::mutex> lock(mutex_);
        turn_.wait(lock, [&] { return failed_ || written_ == j; });
        if (failed_) return;
        lock.unlock();
        const int error = write_all(fd_, buffer.get(), n);
        lock.lock();
        if (error) {
          failed_ = true;
          error_ = error;
        } else {
          written_ = j + 1;
        }
        turn_.notify_all();
        if (failed_) return;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failed_) {
        failed_ = true;
        exception_ = std::current_exception();
      }
      turn_.notify_all();
    }
  }

  // After run: 0, or the errno of a failed write; rethrows a formatting exception.
  int result() const {
    if (exception_) std::rethrow_exception(exception_);
    return error_;
  }

 private:
  static constexpr std::size_t kChunkBytes = 1 << 20;  // writes of up to 1 MB: see write_obj
  const int fd_;
  const Mesh& mesh_;
  int64_t per_chunk_ = 1, chunks_ = 0;
  std::mutex mutex_;
  std::condition_variable turn_;
  int64_t written_ = 0;
  bool failed_ = false;
  int error_ = 0;
  std::exception_ptr exception_;
};

}  // namespace

char* format_g(char* out, double x, int precision) { return kFormatters[precision](out, x); }

char* format_index(char* out, uint64_t u) { return put_index(out, u); }

int write_obj(int fd, const Mesh& mesh, int threads) {
  Pipeline pipeline(fd, mesh);
  std::thread helper;
  int used = threads >= 2 && pipeline.chunks() >= 2 ? 2 : 1;
  if (used == 2) {
    try {
      helper = std::thread([&pipeline] { pipeline.run(1, 2); });
    } catch (const std::system_error&) {  // no thread to be had: all in this one
      used = 1;
    }
  }
  pipeline.run(0, used);
  if (helper.joinable()) helper.join();
  return pipeline.result();
}

}  // namespace meshtext
