#version 450
// y[i] = value[0]: fills a tensor with a scalar that already lives on the device.
//
// Push constants (64 bytes): misc.x: element count; the rest is padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer V { float data[]; } value;
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
    y.data[i] = value.data[0];
}
