#version 450
// Elementwise c = a OP b, four elements per invocation (vec4 loads and stores), for
// inputs that have the output's shape or are scalars (broadcast from element 0). The
// host uses it when every buffer holds a whole number of vec4s (see unary4.comp).
//
// Push constants (64 bytes): misc.x: vec4 count, misc.y: op (`binary_op`'s codes,
// elementwise.glsl), misc.z: flags (bit 0: `a` is a scalar, bit 1: `b` is); the rest
// is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer A { vec4 data[]; } a;
layout(set = 0, binding = 1) readonly buffer B { vec4 data[]; } b;
layout(set = 0, binding = 2) buffer C { vec4 data[]; } c;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

#include "elementwise.glsl"

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 256u
        + gl_LocalInvocationID.x;
    if (i >= p.misc.x) {
        return;
    }
    uint flags = p.misc.z;
    vec4 x = (flags & 1u) != 0u ? vec4(a.data[0].x) : a.data[i];
    vec4 y = (flags & 2u) != 0u ? vec4(b.data[0].x) : b.data[i];
    uint op = p.misc.y;
    c.data[i] = vec4(binary_op(op, x.x, y.x), binary_op(op, x.y, y.y),
                     binary_op(op, x.z, y.z), binary_op(op, x.w, y.w));
}
