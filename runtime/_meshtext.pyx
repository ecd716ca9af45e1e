# cython: boundscheck=False, wraparound=False, initializedcheck=False
# distutils: language = c++
"""Binding of runtime/src/meshtext.cpp: OBJ files and ``%g`` formatting without the GIL.

No validation beyond what typed memoryviews enforce (dtype, C-contiguity) and the shapes: the
checked API is :func:`runtime.mesh_io.write_obj` / :func:`runtime.mesh_io.format_g` (finite
values are the caller's responsibility; a triangle index out of range raises IndexError).
"""
import os

from libc.stdint cimport int32_t, int64_t, uint64_t

import numpy as np


cdef extern from "meshtext.h" namespace "meshtext":
    size_t kSlack
    size_t max_g_length(int precision) nogil
    char* c_format_g "meshtext::format_g"(char* out, double x, int precision) except + nogil
    char* c_format_index "meshtext::format_index"(char* out, uint64_t u) except + nogil
    cdef cppclass Mesh:
        const float* vertices32
        const double* vertices64
        int64_t nver
        const double* colors
        const int32_t* triangles32
        const int64_t* triangles64
        int64_t ntri
    int c_write_obj "meshtext::write_obj"(int fd, const Mesh& mesh, int threads) except + nogil


def write_obj(int fd, vertices, triangles, colors, int threads=2):
    """Write the OBJ text of ``vertices`` ((N, 3) float32 or float64), ``triangles`` ((M, 3)
    int32 or int64, in 0..N-1) and ``colors`` (None or (N, 3) float64), all C-contiguous, to the
    file descriptor ``fd``, formatting with up to ``threads`` threads (1 or 2). OSError if a
    write fails."""
    cdef const float[:, ::1] v32
    cdef const double[:, ::1] v64
    cdef const double[:, ::1] c64
    cdef const int32_t[:, ::1] t32
    cdef const int64_t[:, ::1] t64
    cdef Mesh mesh
    mesh.nver = vertices.shape[0]
    mesh.ntri = triangles.shape[0]
    if vertices.shape[1] != 3 or triangles.shape[1] != 3 or (colors is not None and colors.shape != (mesh.nver, 3)):
        raise ValueError("vertices, triangles and colors: three columns, colours one row per vertex")
    mesh.vertices32 = NULL
    mesh.vertices64 = NULL
    mesh.colors = NULL
    mesh.triangles32 = NULL
    mesh.triangles64 = NULL
    if vertices.dtype == np.float32:
        v32 = vertices
        if mesh.nver:
            mesh.vertices32 = &v32[0, 0]
    else:
        v64 = vertices
        if mesh.nver:
            mesh.vertices64 = &v64[0, 0]
    if colors is not None:
        c64 = colors
        if mesh.nver:
            mesh.colors = &c64[0, 0]
    if triangles.dtype == np.int32:
        t32 = triangles
        if mesh.ntri:
            mesh.triangles32 = &t32[0, 0]
    else:
        t64 = triangles
        if mesh.ntri:
            mesh.triangles64 = &t64[0, 0]
    cdef int error
    with nogil:
        error = c_write_obj(fd, mesh, threads)
    if error:
        raise OSError(error, os.strerror(error))


def format_g_lines(const double[::1] values, int precision):
    """``"%.{precision}g\\n"`` of every value (finite; 1 <= precision <= 9), as bytes."""
    if not 1 <= precision <= 9:
        raise ValueError(f"precision {precision} is not supported (1 to 9)")
    cdef Py_ssize_t i, n = values.shape[0]
    out = np.empty(n * (max_g_length(precision) + 1) + kSlack, np.uint8)
    cdef char[::1] buf = out.view(np.int8)
    cdef char* p = &buf[0]
    with nogil:
        for i in range(n):
            p = c_format_g(p, values[i], precision)
            p[0] = b'\n'
            p += 1
    return out[:p - &buf[0]].tobytes()


def format_index_line(const uint64_t[::1] values):
    """``" %d"`` of every value (>= 1) one after the other, as bytes (the face lines' numbers)."""
    cdef Py_ssize_t i, n = values.shape[0]
    out = np.empty(n * 21 + kSlack, np.uint8)
    cdef char[::1] buf = out.view(np.int8)
    cdef char* p = &buf[0]
    with nogil:
        for i in range(n):
            p = c_format_index(p, values[i])
    return out[:p - &buf[0]].tobytes()
