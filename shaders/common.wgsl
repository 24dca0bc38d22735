// Prepended to every kernel. Binding 0 holds the launch's parameters as 64 u32 words
// (floats are passed as their bit patterns), a uniform buffer: GPUs serve those from a constant
// cache to every invocation at once. Storage bindings 1.. are the kernel's buffers.
@group(0) @binding(0) var<uniform> P: array<vec4<u32>, 16>;

// Parameter word i.
fn p(i: u32) -> u32 {
    return P[i / 4u][i % 4u];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p(i));
}

// Index of this invocation in a 1-D launch of 256-wide workgroups laid out on a 2-D grid
// (a grid dimension holds at most 65,535 workgroups).
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Invocations in a 1-D launch of 256-wide workgroups: the step of a loop in which each invocation
// handles several elements, consecutive invocations reading consecutive ones.
fn launched(nwg: vec3<u32>) -> u32 {
    return nwg.x * nwg.y * 256u;
}

// Index of this workgroup in a launch of one workgroup per row, on a 2-D grid.
fn group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Element-wise kernels work on quads: invocation q writes outputs 4q..4q+3 as one vec4 (output
// buffers are allocated in multiples of 16 bytes; a last partial quad writes into that padding
// and reads out of bounds, which WGSL's checked accesses turn into zeros). CPU drivers pay a
// fixed cost per invocation and per access, so four elements per access is ~2.5× faster there.

// Number of (merged) axes of a strided launch, an override constant: the index arithmetic below
// is then unrolled, and a one-axis launch divides nothing (CPU drivers cannot vectorise division).
override RANK: u32 = 1u;
// Whether the innermost axis is a multiple of 4, so that a quad shares its outer coordinates and
// its offsets are those of its first element plus 0..3 innermost strides.
override ALIGNED: bool = true;

// Offsets of flat output index i in operands 0, 1 and 2 of a strided launch whose parameters
// are [quads, _, _, _, shape[8], strides of operand 0 [8], of operand 1 [8], of operand 2 [8]]
// (absent operands read zero strides). The index is split into coordinates once for all.
fn strided_offsets(i: u32) -> vec3<u32> {
    var rem = i;
    var off = vec3<u32>(0u);
    for (var d = RANK - 1u; d > 0u; d--) {
        let s = p(4u + d);
        off += (rem % s) * vec3<u32>(p(12u + d), p(20u + d), p(28u + d));
        rem = rem / s;
    }
    return off + rem * vec3<u32>(p(12u), p(20u), p(28u));
}

// The offsets of quad q's four elements in the three operands: entry k is element 4q + k's.
fn quad_offsets(q: u32) -> array<vec3<u32>, 4> {
    if (ALIGNED) {
        let o = strided_offsets(4u * q);
        let s = vec3<u32>(p(11u + RANK), p(19u + RANK), p(27u + RANK));
        return array<vec3<u32>, 4>(o, o + s, o + 2u * s, o + 3u * s);
    }
    return array<vec3<u32>, 4>(
        strided_offsets(4u * q),
        strided_offsets(4u * q + 1u),
        strided_offsets(4u * q + 2u),
        strided_offsets(4u * q + 3u),
    );
}
