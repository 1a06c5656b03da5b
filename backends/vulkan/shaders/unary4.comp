#version 450
// Elementwise y = f(x), four elements per invocation: vec4 loads and stores. The host
// uses it when both buffers hold a whole number of vec4s (the pool's blocks do: tensor
// views are rounded up to 4 elements); elements past the tensor's end are padding of
// the same blocks, computed and never read.
//
// Push constants (64 bytes): misc.x: vec4 count, misc.y: op (`unary_op`'s codes,
// elementwise.glsl); the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { vec4 data[]; } x;
layout(set = 0, binding = 1) buffer Y { vec4 data[]; } y;

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
    vec4 v = x.data[i];
    uint op = p.misc.y;
    y.data[i] = vec4(unary_op(op, v.x), unary_op(op, v.y), unary_op(op, v.z),
                     unary_op(op, v.w));
}
