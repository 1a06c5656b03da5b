// C[M, N] = op(A) * op(B) for f32 tensors, multiplied as f16 on the device's matrix units
// (VK_KHR_cooperative_matrix, 16 x 16 x 16 f16 operands, f32 accumulators): each operand
// is rounded to f16 once, when it is staged in workgroup memory; products are summed in
// f32 and C is written as f32. WGSL rather than GLSL because naga's WGSL front end is the
// one with cooperative matrices (`wgpu_cooperative_matrix`).
//
// A workgroup of 256 invocations computes a 128 x 128 tile of C. It must consist of
// exactly 8 subgroups (the host enables this shader only where the subgroup size is 32);
// subgroup s computes the 64 x 32 block at rows 64 (s / 4), columns 32 (s % 4) of the
// tile as 4 x 2 accumulators of 16 x 16. K is walked 32 at a time: the group loads a
// 128 x 32 slab of op(A) and a 32 x 128 slab of op(B) from global memory (scalars, zero
// past the edges, each invocation 16 of each into registers, neighbouring invocations
// reading neighbouring floats of the contiguous dimension), rounds them to f16 into
// workgroup memory, and each subgroup multiplies its part while the group's loads of the
// next slab are in flight. Rows of the slabs are padded (40 and 136
// halves: 80 and 272 bytes, multiples of 16 as cooperative loads want).
//
// C leaves through workgroup memory: each subgroup stores one accumulator at a time into
// its own 16 x 16 f32 scratch, and its invocations copy the elements inside C's bounds.
// The scratch, zero-filled, also gives the accumulators their initial zeros.
//
// Push constants (64 bytes): misc.x: M, misc.y: N, misc.z: K, misc.w: flags (bit 0: A
// is stored [K, M] and transposed, bit 1: B is stored [N, K] and transposed); the rest is
// padding. The grid is (ceil(N / 128), ceil(M / 128)).
enable f16;
enable wgpu_cooperative_matrix;

struct Params {
    misc: vec4<u32>,
    pad0: vec4<u32>,
    pad1: vec4<u32>,
    pad2: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

var<immediate> p: Params;

const AS: u32 = 40u;
const BS: u32 = 136u;

// op(A) slab [128][AS], op(B) slab [32][BS], 8 scratch tiles of 16 x 16.
var<workgroup> sa: array<f16, 5120>;
var<workgroup> sb: array<f16, 4352>;
var<workgroup> sc: array<f32, 2048>;

// The dimensions and flags, and this invocation's place, for `fetch` and `stash`.
var<private> m_total: u32;
var<private> n_total: u32;
var<private> k_total: u32;
var<private> ta: bool;
var<private> tb: bool;
var<private> row0: u32;
var<private> col0: u32;
var<private> tid: u32;
// This invocation's 16 elements of the next slab of op(A) and of op(B).
var<private> ra: array<f32, 16>;
var<private> rb: array<f32, 16>;

// Where the r-th element of this invocation's share of a slab goes: (m, k) of op(A),
// (k, n) of op(B); neighbouring invocations take neighbouring floats of the dimension
// that is contiguous in global memory.
fn a_place(r: u32) -> vec2<u32> {
    let idx = r * 256u + tid;
    if ta {
        return vec2<u32>(idx % 128u, idx / 128u);
    }
    return vec2<u32>(idx / 32u, idx % 32u);
}

fn b_place(r: u32) -> vec2<u32> {
    let idx = r * 256u + tid;
    if tb {
        return vec2<u32>(idx % 32u, idx / 32u);
    }
    return vec2<u32>(idx / 128u, idx % 128u);
}

// Loads this invocation's share of the slab at k0 into `ra` and `rb` (zero past the edges).
fn fetch(k0: u32) {
    for (var r = 0u; r < 16u; r++) {
        let pa = a_place(r);
        let gm = row0 + pa.x;
        let gk = k0 + pa.y;
        var va = 0.0;
        if gm < m_total && gk < k_total {
            if ta {
                va = a[gk * m_total + gm];
            } else {
                va = a[gm * k_total + gk];
            }
        }
        ra[r] = va;
        let pb = b_place(r);
        let gkb = k0 + pb.x;
        let gn = col0 + pb.y;
        var vb = 0.0;
        if gkb < k_total && gn < n_total {
            if tb {
                vb = b[gn * k_total + gkb];
            } else {
                vb = b[gkb * n_total + gn];
            }
        }
        rb[r] = vb;
    }
}

// Stores `ra` and `rb`, rounded to f16, into the slabs in workgroup memory.
fn stash() {
    for (var r = 0u; r < 16u; r++) {
        let pa = a_place(r);
        sa[pa.x * AS + pa.y] = f16(ra[r]);
        let pb = b_place(r);
        sb[pb.x * BS + pb.y] = f16(rb[r]);
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    m_total = p.misc.x;
    n_total = p.misc.y;
    k_total = p.misc.z;
    ta = (p.misc.w & 1u) != 0u;
    tb = (p.misc.w & 2u) != 0u;
    row0 = group.y * 128u;
    col0 = group.x * 128u;
    tid = local_index;
    let wm = (sg / 4u) * 64u;
    let wn = (sg % 4u) * 32u;
    let scratch = sg * 256u;

    for (var e = lane; e < 256u; e += sg_size) {
        sc[scratch + e] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&sc[scratch], 16u);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;
    var c20 = c00;
    var c21 = c00;
    var c30 = c00;
    var c31 = c00;

    fetch(0u);
    for (var k0 = 0u; k0 < k_total; k0 += 32u) {
        // The previous slab's products are done with workgroup memory.
        workgroupBarrier();
        stash();
        workgroupBarrier();
        // The next slab's loads are in flight while this one is multiplied.
        if k0 + 32u < k_total {
            fetch(k0 + 32u);
        }

        for (var kk = 0u; kk < 32u; kk += 16u) {
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&sb[kk * BS + wn], BS);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&sb[kk * BS + wn + 16u], BS);
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&sa[wm * AS + kk], AS);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&sa[(wm + 16u) * AS + kk], AS);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&sa[(wm + 32u) * AS + kk], AS);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&sa[(wm + 48u) * AS + kk], AS);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
    }

    // Out through the scratch tile, one accumulator at a time.
    for (var t = 0u; t < 8u; t++) {
        workgroupBarrier();
        switch t {
            case 0u: { coopStoreT(c00, &sc[scratch], 16u); }
            case 1u: { coopStoreT(c01, &sc[scratch], 16u); }
            case 2u: { coopStoreT(c10, &sc[scratch], 16u); }
            case 3u: { coopStoreT(c11, &sc[scratch], 16u); }
            case 4u: { coopStoreT(c20, &sc[scratch], 16u); }
            case 5u: { coopStoreT(c21, &sc[scratch], 16u); }
            case 6u: { coopStoreT(c30, &sc[scratch], 16u); }
            default: { coopStoreT(c31, &sc[scratch], 16u); }
        }
        workgroupBarrier();
        let gr = row0 + wm + (t / 2u) * 16u;
        let gc = col0 + wn + (t % 2u) * 16u;
        for (var e = lane; e < 256u; e += sg_size) {
            let r = gr + e / 16u;
            let cc = gc + e % 16u;
            if r < m_total && cc < n_total {
                c[r * n_total + cc] = sc[scratch + e];
            }
        }
    }
}
