#version 450
// Elementwise y = f(x), four elements per invocation: vec4 loads and stores. The host
// uses it when both buffers hold a whole number of vec4s (the pool's blocks do: tensor
// views are rounded up to 4 elements); elements past the tensor's end are padding of
// the same blocks, computed and never read.
//
// Push constants (64 bytes): misc.x: vec4 count, misc.y: op (0 Neg, 1 Square, 2 Sqrt,
// 3 Exp, 4 Relu); the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { vec4 data[]; } x;
layout(set = 0, binding = 1) buffer Y { vec4 data[]; } y;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 256u
        + gl_LocalInvocationID.x;
    if (i >= p.misc.x) {
        return;
    }
    vec4 v = x.data[i];
    vec4 r;
    uint op = p.misc.y;
    if (op == 0u) {
        r = -v;
    } else if (op == 1u) {
        r = v * v;
    } else if (op == 2u) {
        r = sqrt(v);
    } else if (op == 3u) {
        r = exp(v);
    } else {
        // TensorFlow's Relu: NaN (which compares false) and -0.0 pass through.
        r = vec4(v.x < 0.0 ? 0.0 : v.x, v.y < 0.0 ? 0.0 : v.y,
                 v.z < 0.0 ? 0.0 : v.z, v.w < 0.0 ? 0.0 : v.w);
    }
    y.data[i] = r;
}
