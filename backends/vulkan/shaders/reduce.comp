#version 450
// Sum (or mean) over the middle axis of an [outer, r, inner] view of the input:
// y[o, j] = sum_k x[o, k, j] (divided by r for a mean).
//
// Two modes, chosen by the host through `inner` (uniform for the whole dispatch):
//  - inner == 1 (the reduced elements are contiguous, e.g. a sum over all axes or the
//    last axis): `chunks` workgroups per output row, each summing one chunk of the row
//    (its 256 invocations stride over the chunk and combine their partial sums in
//    workgroup memory). With one chunk per row the workgroup writes the row's result;
//    with more (the host's first pass of a two-pass reduction over long rows) it writes
//    its chunk's partial sum to y[row * chunks + chunk], and a second dispatch of this
//    shader reduces those partials.
//  - inner > 1: one invocation per output, looping over k (reads are coalesced across
//    neighbouring j).
// Workgroup indices are spread over a 2-D grid when the x limit is too small.
//
// Push constants (64 bytes): misc.x: outer, misc.y: r, misc.z: inner,
// misc.w: 1 for a mean; pad0.x: chunks per row (0 or 1: one); pad0.y: the divisor of a
// mean (0: r; a second pass divides by the first pass's row length); the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) buffer Y { float data[]; } y;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

shared float partial[256];

float finish(float s, uint r) {
    if (p.misc.w == 1u) {
        uint d = p.pad0.y == 0u ? r : p.pad0.y;
        return s / float(d);
    }
    return s;
}

void main() {
    uint outer = p.misc.x;
    uint r = p.misc.y;
    uint inner = p.misc.z;
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint lid = gl_LocalInvocationID.x;
    if (inner == 1u) {
        uint chunks = max(p.pad0.x, 1u);
        uint row = group / chunks;
        uint chunk = group % chunks;
        uint len = (r + chunks - 1u) / chunks;
        uint lo = chunk * len;
        uint hi = min(r, lo + len);
        float s = 0.0;
        if (row < outer) {
            uint base = row * r;
            for (uint k = lo + lid; k < hi; k += 256u) {
                s += x.data[base + k];
            }
        }
        partial[lid] = s;
        barrier();
        for (uint stride = 128u; stride > 0u; stride = stride >> 1u) {
            if (lid < stride) {
                partial[lid] = partial[lid] + partial[lid + stride];
            }
            barrier();
        }
        if (lid == 0u && row < outer) {
            if (chunks == 1u) {
                y.data[row] = finish(partial[0], r);
            } else {
                y.data[group] = partial[0];
            }
        }
    } else {
        uint i = group * 256u + lid;
        if (i < outer * inner) {
            uint o = i / inner;
            uint j = i % inner;
            uint base = o * r * inner + j;
            float s = 0.0;
            for (uint k = 0u; k < r; k++) {
                s += x.data[base + k * inner];
            }
            y.data[i] = finish(s, r);
        }
    }
}
