// The elementwise operations every elementwise shader shares: build.rs pastes this file
// where a shader says `#include "elementwise.glsl"`, so the scalar and the vec4 shaders
// compute each op with the same code (the vec4 ones call it per component).
//
// Semantics are TensorFlow's as the CPU kernels implement them (docs/tensorflow-ops.txt,
// backends/cpu/src/kernels/): NaN propagates where IEEE arithmetic propagates it, and
// where a comparison decides (Relu, Maximum, Minimum) the CPU's comparison is used.
// Transcendentals have the GPU's precision (a few ulp), not the CPU's.

float nan_value() {
    return uintBitsToFloat(0x7fc00000u);
}

// Comparisons that must see NaN are made on the bits: without the float-controls
// execution modes a driver may assume no NaN, and NVIDIA's compiler (seen on an H200)
// turned `v < 0.0 ? 0.0 : v` into a max, which drops a NaN. Integer code cannot be.
bool is_nan_bits(float v) {
    return (floatBitsToUint(v) & 0x7fffffffu) > 0x7f800000u;
}

// A non-NaN float as an integer with the same order: -0.0 and 0.0 both map to 0 (they
// compare equal), negatives to minus their magnitude.
int ordered_bits(float v) {
    uint bits = floatBitsToUint(v);
    int magnitude = int(bits & 0x7fffffffu);
    return (bits & 0x80000000u) != 0u ? -magnitude : magnitude;
}

// Unary op codes: 0 Neg, 1 Square, 2 Sqrt, 3 Exp, 4 Relu, 5 Log, 6 Tanh, 7 Sigmoid.
float unary_op(uint op, float v) {
    if (op == 0u) {
        return -v;
    } else if (op == 1u) {
        return v * v;
    } else if (op == 2u) {
        return sqrt(v);
    } else if (op == 3u) {
        return exp(v);
    } else if (op == 4u) {
        // TensorFlow's Relu: NaN (which compares false) and -0.0 pass through. Decided on
        // the bits: NVIDIA's compiler turned `v < 0.0 ? 0.0 : v` into a max, which gives 0
        // for NaN (Vulkan's default float controls allow it; seen on an H200).
        return (!is_nan_bits(v) && ordered_bits(v) < 0) ? 0.0 : v;
    } else if (op == 5u) {
        // GLSL leaves log of 0 and of negatives undefined: IEEE's values, explicitly.
        if (v < 0.0) {
            return nan_value();
        }
        if (v == 0.0) {
            return uintBitsToFloat(0xff800000u);
        }
        return log(v);
    } else if (op == 6u) {
        // tanh through exp overflows for large |v| in some drivers: it is +-1 there.
        if (abs(v) >= 10.0) {
            return v < 0.0 ? -1.0 : 1.0;
        }
        return tanh(v);
    } else {
        // Sigmoid as the CPU computes it: 1 / (1 + exp(-v)).
        return 1.0 / (1.0 + exp(-v));
    }
}

// Binary op codes: 0 Add, 1 Sub, 2 Mul, 3 Div, 4 Maximum, 5 Minimum, 6 FloorMod,
// 7 ReluGrad (x: gradients, y: features), 8 TanhGrad (x: y, y: dy),
// 9 SigmoidGrad (x: y, y: dy).
float binary_op(uint op, float x, float y) {
    if (op == 0u) {
        return x + y;
    } else if (op == 1u) {
        return x - y;
    } else if (op == 2u) {
        return x * y;
    } else if (op == 3u) {
        return x / y;
    } else if (op == 4u) {
        // A NaN on either side gives NaN (the CPU's `a.is_nan() || a > b ? a : b`; the
        // comparison on the bits, see ordered_bits: a float max would drop the NaN).
        if (is_nan_bits(x) || is_nan_bits(y)) {
            return is_nan_bits(x) ? x : y;
        }
        return ordered_bits(x) > ordered_bits(y) ? x : y;
    } else if (op == 5u) {
        if (is_nan_bits(x) || is_nan_bits(y)) {
            return is_nan_bits(x) ? x : y;
        }
        return ordered_bits(x) < ordered_bits(y) ? x : y;
    } else if (op == 6u) {
        // The remainder of floor division with the divisor's sign, from C's fmod
        // (x - trunc(x / y) * y; fmod(x, 0) is NaN; fmod(finite x, +-inf) is x).
        float r = (isinf(y) && !isinf(x)) ? x : x - trunc(x / y) * y;
        if (r != 0.0 && ((r < 0.0) != (y < 0.0))) {
            r = r + y;
        }
        return r;
    } else if (op == 7u) {
        // The CPU's `features > 0 ? gradients : 0`, on the bits (a NaN feature gives 0).
        return (!is_nan_bits(y) && ordered_bits(y) > 0) ? x : 0.0;
    } else if (op == 8u) {
        return y * (1.0 - x * x);
    } else {
        return y * x * (1.0 - x);
    }
}
