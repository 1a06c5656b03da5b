#version 450
// Copies rows of `inner` elements between [outer, src_len, inner] and
// [outer, dst_len, inner] views: GatherV2 (row j of each outer block from source row
// rows[j]), ConcatV2 and Pack (one dispatch per input, its rows written at an offset of
// the output's joined dimension) and Unpack (one dispatch per output, read from an
// offset). One invocation per copied element, over [outer, nrows, inner]:
//   y[(o * dst_len + dst_off + j) * inner + r]
//       = x[(o * src_len + src_off + map(j)) * inner + r]
// where map(j) is rows[j] (flags bit 0) or j.
//
// Push constants (64 bytes): misc.x: element count (outer * nrows * inner), misc.y:
// inner, misc.z: nrows, misc.w: flags; pad0.x: src_len, pad0.y: dst_len, pad0.z:
// dst_off, pad0.w: src_off; the rest is padding. Bindings: 0 x, 1 rows (x again when unused), 2 y.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) readonly buffer R { uint data[]; } rows;
layout(set = 0, binding = 2) buffer Y { float data[]; } y;

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
    uint inner = p.misc.y;
    uint nrows = p.misc.z;
    uint r = i % inner;
    uint row = i / inner;
    uint j = row % nrows;
    uint o = row / nrows;
    uint src = p.pad0.w + ((p.misc.w & 1u) != 0u ? rows.data[j] : j);
    y.data[(o * p.pad0.y + p.pad0.z + j) * inner + r] = x.data[(o * p.pad0.x + src) * inner + r];
}
