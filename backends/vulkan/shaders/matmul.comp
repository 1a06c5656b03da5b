#version 450
// C[M, N] = op(A) * op(B), op transposing when asked: tiled through workgroup memory,
// double-buffered.
//
// A workgroup of 16 x 16 invocations computes a 128 x 128 tile of C; each invocation
// computes 8 x 8 outputs: rows 4 ty .. 4 ty + 3 and 64 + 4 ty .. 64 + 4 ty + 3, the same
// pattern of columns in tx, so every operand it reads from workgroup memory is a vec4 and
// neighbouring invocations read neighbouring vec4s. K is walked 8 at a time. Each slab
// (128 x 8 of op(A), 8 x 128 of op(B)) is stored k-major, m (or n) contiguous, in rows of
// 132 floats: the 4 floats of padding put the rows of a transposing store in different
// banks. Two buffers per operand: while the group computes on one slab, each invocation
// has already loaded its part of the next from global memory into registers, and stores
// it into the other buffer afterwards, so one barrier per slab suffices.
//
// Global loads are vec4s (bindings 3-4 alias A and B as vec4 arrays) where the host says
// the contiguous dimension allows (flags) and the four elements are in bounds, scalars
// (zero past the edges) otherwise; C is stored as vec4s likewise (binding 5).
//
// Push constants (64 bytes): misc.x: M, misc.y: N, misc.z: K, misc.w: flags (bit 0:
// A is stored [K, M] and transposed, bit 1: B is stored [N, K] and transposed, bit 2: A
// may be read as vec4s, bit 3: B may, bit 4: C may be written as vec4s); the rest is
// padding. The grid is (ceil(N / 128), ceil(M / 128)).
layout(local_size_x = 16, local_size_y = 16) in;

layout(set = 0, binding = 0) readonly buffer A { float data[]; } a;
layout(set = 0, binding = 1) readonly buffer B { float data[]; } b;
layout(set = 0, binding = 2) buffer C { float data[]; } c;
layout(set = 0, binding = 3) readonly buffer A4 { vec4 data[]; } a4;
layout(set = 0, binding = 4) readonly buffer B4 { vec4 data[]; } b4;
layout(set = 0, binding = 5) buffer C4 { vec4 data[]; } c4;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

// [buffer][k][m / 4] (resp. n / 4): 2 x 8 rows of 33 vec4s (128 floats + 4 of padding).
shared vec4 As[528];
shared vec4 Bs[528];

uint M;
uint N;
uint K;
uint flags;
uint tid;
uint row0;
uint col0;

float aAt(uint m, uint k) {
    if (m >= M || k >= K) {
        return 0.0;
    }
    return (flags & 1u) != 0u ? a.data[k * M + m] : a.data[m * K + k];
}

float bAt(uint k, uint n) {
    if (k >= K || n >= N) {
        return 0.0;
    }
    return (flags & 2u) != 0u ? b.data[n * K + k] : b.data[k * N + n];
}

// This invocation's four elements of the A slab at k0 (see storeA for where they go).
vec4 loadA(uint k0) {
    bool vec = (flags & 4u) != 0u;
    if ((flags & 1u) != 0u) {
        // A is [K, M]: four consecutive m at one k.
        uint k = k0 + tid / 32u;
        uint m = row0 + (tid % 32u) * 4u;
        if (vec && k < K && m + 3u < M) {
            return a4.data[(k * M + m) / 4u];
        }
        return vec4(aAt(m, k), aAt(m + 1u, k), aAt(m + 2u, k), aAt(m + 3u, k));
    }
    // A is [M, K]: four consecutive k at one m.
    uint m = row0 + tid / 2u;
    uint k = k0 + (tid % 2u) * 4u;
    if (vec && m < M && k + 3u < K) {
        return a4.data[(m * K + k) / 4u];
    }
    return vec4(aAt(m, k), aAt(m, k + 1u), aAt(m, k + 2u), aAt(m, k + 3u));
}

vec4 loadB(uint k0) {
    bool vec = (flags & 8u) != 0u;
    if ((flags & 2u) == 0u) {
        // B is [K, N]: four consecutive n at one k.
        uint k = k0 + tid / 32u;
        uint n = col0 + (tid % 32u) * 4u;
        if (vec && k < K && n + 3u < N) {
            return b4.data[(k * N + n) / 4u];
        }
        return vec4(bAt(k, n), bAt(k, n + 1u), bAt(k, n + 2u), bAt(k, n + 3u));
    }
    // B is [N, K]: four consecutive k at one n.
    uint n = col0 + tid / 2u;
    uint k = k0 + (tid % 2u) * 4u;
    if (vec && n < N && k + 3u < K) {
        return b4.data[(n * K + k) / 4u];
    }
    return vec4(bAt(k, n), bAt(k + 1u, n), bAt(k + 2u, n), bAt(k + 3u, n));
}

void storeA(uint buf, vec4 v) {
    if ((flags & 1u) != 0u) {
        As[(buf * 8u + tid / 32u) * 33u + tid % 32u] = v;
    } else {
        uint m = tid / 2u;
        uint k = (tid % 2u) * 4u;
        uint base = buf * 8u + k;
        As[(base + 0u) * 33u + m / 4u][m % 4u] = v.x;
        As[(base + 1u) * 33u + m / 4u][m % 4u] = v.y;
        As[(base + 2u) * 33u + m / 4u][m % 4u] = v.z;
        As[(base + 3u) * 33u + m / 4u][m % 4u] = v.w;
    }
}

void storeB(uint buf, vec4 v) {
    if ((flags & 2u) == 0u) {
        Bs[(buf * 8u + tid / 32u) * 33u + tid % 32u] = v;
    } else {
        uint n = tid / 2u;
        uint k = (tid % 2u) * 4u;
        uint base = buf * 8u + k;
        Bs[(base + 0u) * 33u + n / 4u][n % 4u] = v.x;
        Bs[(base + 1u) * 33u + n / 4u][n % 4u] = v.y;
        Bs[(base + 2u) * 33u + n / 4u][n % 4u] = v.z;
        Bs[(base + 3u) * 33u + n / 4u][n % 4u] = v.w;
    }
}

void storeC(uint r, uint col, vec4 v) {
    if (r >= M) {
        return;
    }
    if ((flags & 16u) != 0u && col + 3u < N) {
        c4.data[(r * N + col) / 4u] = v;
        return;
    }
    for (uint j = 0u; j < 4u; j++) {
        if (col + j < N) {
            c.data[r * N + col + j] = v[j];
        }
    }
}

void main() {
    M = p.misc.x;
    N = p.misc.y;
    K = p.misc.z;
    flags = p.misc.w;
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    tid = ty * 16u + tx;
    row0 = gl_WorkGroupID.y * 128u;
    col0 = gl_WorkGroupID.x * 128u;

    // acc[2 i + h]: row i of this invocation's 8 (4 ty + i, then 64 + 4 ty + i - 4),
    // columns 4 tx .. 4 tx + 3 (h = 0) or 64 + 4 tx .. (h = 1).
    vec4 acc[16];
    for (uint q = 0u; q < 16u; q++) {
        acc[q] = vec4(0.0);
    }

    uint slabs = (K + 7u) / 8u;
    vec4 na = loadA(0u);
    vec4 nb = loadB(0u);
    storeA(0u, na);
    storeB(0u, nb);
    barrier();
    for (uint t = 0u; t < slabs; t++) {
        uint cur = t % 2u;
        bool more = t + 1u < slabs;
        if (more) {
            na = loadA((t + 1u) * 8u);
            nb = loadB((t + 1u) * 8u);
        }
        for (uint kk = 0u; kk < 8u; kk++) {
            uint row = (cur * 8u + kk) * 33u;
            vec4 a0 = As[row + ty];
            vec4 a1 = As[row + 16u + ty];
            vec4 b0 = Bs[row + tx];
            vec4 b1 = Bs[row + 16u + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.x * b1;
            acc[2] += a0.y * b0;
            acc[3] += a0.y * b1;
            acc[4] += a0.z * b0;
            acc[5] += a0.z * b1;
            acc[6] += a0.w * b0;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.x * b1;
            acc[10] += a1.y * b0;
            acc[11] += a1.y * b1;
            acc[12] += a1.z * b0;
            acc[13] += a1.z * b1;
            acc[14] += a1.w * b0;
            acc[15] += a1.w * b1;
        }
        if (more) {
            storeA(1u - cur, na);
            storeB(1u - cur, nb);
        }
        barrier();
    }

    for (uint i = 0u; i < 8u; i++) {
        uint r = row0 + (i < 4u ? 4u * ty + i : 64u + 4u * ty + i - 4u);
        storeC(r, col0 + 4u * tx, acc[2u * i]);
        storeC(r, col0 + 64u + 4u * tx, acc[2u * i + 1u]);
    }
}
