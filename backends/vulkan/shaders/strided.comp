#version 450
// y[i] = x[base + sum_d (c_d mod m_d) * s_d], where c is i's index in the output's
// dimensions (at most 4 after the host drops and merges dimensions): Tile (m_d the
// input's dimension, s_d its stride), Transpose (m_d the output's dimension, s_d the
// input's stride along the permuted axis) and Slice (base the block's first element).
// One invocation per output element.
//
// Push constants (64 bytes): dims: the output's dimensions, outermost first, padded with
// 1s in front; mods: m; strides: s; misc.x: element count, misc.y: base; the rest is
// padding.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) buffer Y { float data[]; } y;

layout(push_constant) uniform Params {
    uvec4 dims;
    uvec4 mods;
    uvec4 strides;
    uvec4 misc;
} p;

void main() {
    uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 256u
        + gl_LocalInvocationID.x;
    if (i >= p.misc.x) {
        return;
    }
    uint r = i;
    uint c3 = r % p.dims.w;
    r = r / p.dims.w;
    uint c2 = r % p.dims.z;
    r = r / p.dims.z;
    uint c1 = r % p.dims.y;
    uint c0 = r / p.dims.y;
    uint at = p.misc.y + (c0 % p.mods.x) * p.strides.x + (c1 % p.mods.y) * p.strides.y
        + (c2 % p.mods.z) * p.strides.z + (c3 % p.mods.w) * p.strides.w;
    y.data[i] = x.data[at];
}
