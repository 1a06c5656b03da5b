#version 450
// Elementwise y = f(x): one invocation per element, 1-D index over a 2-D grid.
//
// Push constants (64 bytes): misc.x: element count, misc.y: op (0 Neg, 1 Square,
// 2 Sqrt, 3 Exp, 4 Relu); the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) buffer Y { float data[]; } y;

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
    float v = x.data[i];
    float r = 0.0;
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
        r = v < 0.0 ? 0.0 : v;
    }
    y.data[i] = r;
}
