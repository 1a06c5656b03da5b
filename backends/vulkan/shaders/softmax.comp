#version 450
// Row-wise softmax family over the last dimension: one workgroup of 256 invocations per
// row, which find the row's maximum and the sum of exp(x - max) with trees in workgroup
// memory, then write the row.
//
// Modes (misc.z):
//  0 Softmax:    y = exp(x - max) / sum
//  1 LogSoftmax: y = x - max - log(sum)
//  2 SoftmaxCrossEntropyWithLogits: with s = x - max, y = exp(s) / sum - labels (the
//    backprop, [rows, classes]) and loss[row] = sum(labels * (log(sum) - s)).
// The CPU kernels' formulas in their order; sums run in tree order here, so results
// agree to rounding.
//
// Element (r, c) of x is x[r * xs.x + c * xs.y], of labels labels[r * ls.x + c * ls.y]
// (strides 0 where an input broadcasts along a dimension); y is dense [rows, classes].
//
// Push constants (64 bytes): misc.x: rows, misc.y: classes (> 0), misc.z: mode;
// pad0.xy: x's row and column strides, pad0.zw: labels'; the rest is padding.
// Bindings: 0 x, 1 labels (x again when unused), 2 y, 3 loss (y again when unused).
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer X { float data[]; } x;
layout(set = 0, binding = 1) readonly buffer L { float data[]; } labels;
layout(set = 0, binding = 2) buffer Y { float data[]; } y;
layout(set = 0, binding = 3) buffer Loss { float data[]; } loss;

layout(push_constant) uniform Params {
    uvec4 misc;
    uvec4 pad0;
    uvec4 pad1;
    uvec4 pad2;
} p;

shared float part[256];

float xat(uint row, uint c) {
    return x.data[row * p.pad0.x + c * p.pad0.y];
}

float lat(uint row, uint c) {
    return labels.data[row * p.pad0.z + c * p.pad0.w];
}

// The sum of every invocation's `v` over the workgroup (all invocations call it).
float group_sum(float v) {
    uint lid = gl_LocalInvocationID.x;
    barrier();
    part[lid] = v;
    barrier();
    for (uint stride = 128u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            part[lid] = part[lid] + part[lid + stride];
        }
        barrier();
    }
    return part[0];
}

void main() {
    uint row = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint lid = gl_LocalInvocationID.x;
    uint rows = p.misc.x;
    uint classes = p.misc.y;
    uint mode = p.misc.z;
    // Every invocation of a workgroup takes the same path (row is uniform), so the
    // barriers below are reached by all or none.
    if (row >= rows) {
        return;
    }
    // The row's maximum, starting from its first element (as the CPU's fold does).
    float m = xat(row, 0u);
    for (uint c = lid; c < classes; c += 256u) {
        float v = xat(row, c);
        m = v > m ? v : m;
    }
    part[lid] = m;
    barrier();
    for (uint stride = 128u; stride > 0u; stride = stride >> 1u) {
        if (lid < stride) {
            float o = part[lid + stride];
            part[lid] = o > part[lid] ? o : part[lid];
        }
        barrier();
    }
    float mx = part[0];
    float s = 0.0;
    for (uint c = lid; c < classes; c += 256u) {
        s += exp(xat(row, c) - mx);
    }
    float sum = group_sum(s);
    float log_sum = log(sum);
    float row_loss = 0.0;
    for (uint c = lid; c < classes; c += 256u) {
        float sh = xat(row, c) - mx;
        uint o = row * classes + c;
        if (mode == 0u) {
            y.data[o] = exp(sh) / sum;
        } else if (mode == 1u) {
            y.data[o] = sh - log_sum;
        } else {
            float l = lat(row, c);
            row_loss += l * (log_sum - sh);
            y.data[o] = exp(sh) / sum - l;
        }
    }
    if (mode == 2u) {
        float total = group_sum(row_loss);
        if (lid == 0u) {
            loss.data[row] = total;
        }
    }
}
