#version 450
// Elementwise c = a OP b with numpy broadcasting, rank <= 4 after the host collapses
// dimensions. One invocation per output element; a 1-D index spread over a 2-D grid of
// 256-wide workgroups (the host splits the group count when it exceeds the x limit).
//
// Push constants (64 bytes):
//   dims      output dimensions, outermost first, padded with 1s in front
//   a_strides element strides of `a` per output dimension (0 where `a` broadcasts)
//   b_strides the same for `b`
//   misc      x: element count, y: op (`binary_op`'s codes, elementwise.glsl),
//             z: flags (bit 0: `a` has the output's shape, bit 1: `b` does)
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer A { float data[]; } a;
layout(set = 0, binding = 1) readonly buffer B { float data[]; } b;
layout(set = 0, binding = 2) buffer C { float data[]; } c;

layout(push_constant) uniform Params {
    uvec4 dims;
    uvec4 a_strides;
    uvec4 b_strides;
    uvec4 misc;
} p;

#include "elementwise.glsl"

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 256u
        + gl_LocalInvocationID.x;
    if (i >= p.misc.x) {
        return;
    }
    uint ia = i;
    uint ib = i;
    uint flags = p.misc.z;
    if ((flags & 3u) != 3u) {
        uint r = i;
        uint c3 = r % p.dims.w;
        r = r / p.dims.w;
        uint c2 = r % p.dims.z;
        r = r / p.dims.z;
        uint c1 = r % p.dims.y;
        uint c0 = r / p.dims.y;
        if ((flags & 1u) == 0u) {
            ia = c0 * p.a_strides.x + c1 * p.a_strides.y + c2 * p.a_strides.z
                + c3 * p.a_strides.w;
        }
        if ((flags & 2u) == 0u) {
            ib = c0 * p.b_strides.x + c1 * p.b_strides.y + c2 * p.b_strides.z
                + c3 * p.b_strides.w;
        }
    }
    c.data[i] = binary_op(p.misc.y, a.data[ia], b.data[ib]);
}
