#version 450
// Sum (or mean) over the middle axis of an [outer, r, inner] view of the input:
// y[o, j] = sum_k x[o, k, j] (divided by r for a mean).
//
// Two modes, chosen by the host through `inner` (uniform for the whole dispatch):
//  - inner == 1 (the reduced elements are contiguous, e.g. a sum over all axes or the
//    last axis): one workgroup per output; its 256 invocations stride over the row and
//    combine their partial sums in workgroup memory.
//  - inner > 1: one invocation per output, looping over k (reads are coalesced across
//    neighbouring j).
// Workgroup indices are spread over a 2-D grid when the x limit is too small.
//
// Push constants (64 bytes): misc.x: outer, misc.y: r, misc.z: inner,
// misc.w: 1 for a mean; the rest is padding.
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
        return s / float(r);
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
        float s = 0.0;
        if (group < outer) {
            uint base = group * r;
            for (uint k = lid; k < r; k += 256u) {
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
        if (lid == 0u && group < outer) {
            y.data[group] = finish(partial[0], r);
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
