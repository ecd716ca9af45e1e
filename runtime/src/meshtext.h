// OBJ text for runtime.mesh_io.write_obj: C's "%.9g" / "%.6g" / "%d" without the GIL.
#pragma once

#include <cstddef>
#include <cstdint>

namespace meshtext {

// Bytes formatted numbers may write past the end of their text (whole-word copies): every
// output buffer needs this much room after the largest text it can hold.
constexpr std::size_t kSlack = 64;

// Most bytes of "%.{precision}g" of a finite double (precision 1 to 9).
constexpr std::size_t max_g_length(int precision) { return static_cast<std::size_t>(precision) + 8; }

// Writes "%.{precision}g" of the finite double x at out (1 <= precision <= 9); returns the end.
// Byte for byte what printf (and Python's % operator) write in the "C" locale: the correctly
// rounded digits, ties to even.
char* format_g(char* out, double x, int precision);

// A mesh: exactly one of vertices32 / vertices64 and one of triangles32 / triangles64 is
// non-null (when the count is not 0), all (n, 3) row-major; colours (in [0, 1]) may be null.
struct Mesh {
  const float* vertices32;
  const double* vertices64;
  int64_t nver;
  const double* colors;
  const int32_t* triangles32;
  const int64_t* triangles64;
  int64_t ntri;
};

// Writes the mesh's OBJ text to the file descriptor fd: "v %.9g %.9g %.9g\n" per vertex
// ("v %.9g %.9g %.9g %.6g %.6g %.6g\n" with colours), then "f %d %d %d\n" per triangle, 1-based.
// Formats in pieces of about 1 MB (the writes of up to 1 MB that some kernels copy much faster
// than larger ones) with up to `threads` threads (1 or 2; one if no thread can be started), in
// order. Returns 0, or the errno of a failed write (after which the file holds part of the
// text). Finite vertices and colours are the caller's to check; a triangle index outside
// 0..nver-1 throws std::out_of_range.
int write_obj(int fd, const Mesh& mesh, int threads);

// Writes " %d" of u >= 1 at out (and up to 8 bytes of scratch after it); returns the end of
// the text. For tests: the face lines' numbers.
char* format_index(char* out, uint64_t u);

}  // namespace meshtext
