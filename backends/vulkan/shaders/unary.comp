#version 450
// Elementwise y = f(x): one invocation per element, 1-D index over a 2-D grid.
//
// Push constants (64 bytes): misc.x: element count, misc.y: op (`unary_op`'s codes,
// elementwise.glsl); the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) buffer Y { float data[]; } y;

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
    y.data[i] = unary_op(p.misc.y, x.data[i]);
}
