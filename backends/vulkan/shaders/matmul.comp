#version 450
// C[M, N] = op(A) * op(B), op transposing when asked: tiled through workgroup memory.
//
// A workgroup of 16 x 16 invocations computes a 64 x 64 tile of C; each invocation
// computes 4 x 4 outputs (rows ty + 16 i, columns tx + 16 j, so neighbouring invocations
// touch neighbouring addresses). The K dimension is walked 16 at a time: the group loads
// a 64 x 16 slab of op(A) and a 16 x 64 slab of op(B) into workgroup memory (zero past
// the edges), synchronises, accumulates, and synchronises again.
//
// Push constants (64 bytes): misc.x: M, misc.y: N, misc.z: K, misc.w: flags (bit 0:
// A is stored [K, M] and transposed, bit 1: B is stored [N, K] and transposed); the
// rest is padding. The grid is (ceil(N / 64), ceil(M / 64)).
layout(local_size_x = 16, local_size_y = 16) in;

layout(set = 0, binding = 0) readonly buffer A { float data[]; } a;
layout(set = 0, binding = 1) readonly buffer B { float data[]; } b;
layout(set = 0, binding = 2) buffer C { float data[]; } c;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

// [k][m] and [k][n], 16 x 64 each.
shared float As[1024];
shared float Bs[1024];

void main() {
    uint M = p.misc.x;
    uint N = p.misc.y;
    uint K = p.misc.z;
    bool ta = (p.misc.w & 1u) != 0u;
    bool tb = (p.misc.w & 2u) != 0u;
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    uint tid = ty * 16u + tx;
    uint row0 = gl_WorkGroupID.y * 64u;
    uint col0 = gl_WorkGroupID.x * 64u;

    float acc[16];
    for (uint q = 0u; q < 16u; q++) {
        acc[q] = 0.0;
    }

    for (uint k0 = 0u; k0 < K; k0 += 16u) {
        for (uint l = 0u; l < 4u; l++) {
            uint e = tid + l * 256u;
            // Walk memory contiguously: along k when A is [M, K], along m when [K, M].
            uint m = ta ? (e % 64u) : (e / 16u);
            uint kk = ta ? (e / 64u) : (e % 16u);
            uint gm = row0 + m;
            uint gk = k0 + kk;
            float v = 0.0;
            if (gm < M && gk < K) {
                v = ta ? a.data[gk * M + gm] : a.data[gm * K + gk];
            }
            As[kk * 64u + m] = v;

            uint n = tb ? (e / 16u) : (e % 64u);
            uint kb = tb ? (e % 16u) : (e / 64u);
            uint gn = col0 + n;
            uint gkb = k0 + kb;
            float w = 0.0;
            if (gn < N && gkb < K) {
                w = tb ? b.data[gn * K + gkb] : b.data[gkb * N + gn];
            }
            Bs[kb * 64u + n] = w;
        }
        barrier();
        for (uint kk = 0u; kk < 16u; kk++) {
            float av0 = As[kk * 64u + ty];
            float av1 = As[kk * 64u + ty + 16u];
            float av2 = As[kk * 64u + ty + 32u];
            float av3 = As[kk * 64u + ty + 48u];
            float bv0 = Bs[kk * 64u + tx];
            float bv1 = Bs[kk * 64u + tx + 16u];
            float bv2 = Bs[kk * 64u + tx + 32u];
            float bv3 = Bs[kk * 64u + tx + 48u];
            acc[0] += av0 * bv0;
            acc[1] += av0 * bv1;
            acc[2] += av0 * bv2;
            acc[3] += av0 * bv3;
            acc[4] += av1 * bv0;
            acc[5] += av1 * bv1;
            acc[6] += av1 * bv2;
            acc[7] += av1 * bv3;
            acc[8] += av2 * bv0;
            acc[9] += av2 * bv1;
            acc[10] += av2 * bv2;
            acc[11] += av2 * bv3;
            acc[12] += av3 * bv0;
            acc[13] += av3 * bv1;
            acc[14] += av3 * bv2;
            acc[15] += av3 * bv3;
        }
        barrier();
    }

    for (uint i = 0u; i < 4u; i++) {
        uint r = row0 + ty + 16u * i;
        for (uint j = 0u; j < 4u; j++) {
            uint col = col0 + tx + 16u * j;
            if (r < M && col < N) {
                c.data[r * N + col] = acc[i * 4u + j];
            }
        }
    }
}
