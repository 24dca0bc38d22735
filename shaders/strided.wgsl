// Strided element-wise launches (parameters `Strided`): the output's flat index split into
// coordinates and offsets into each operand, so that permutes, narrows and broadcasts read in
// place. Added to the module of every kernel whose parameters are `Strided`.

// Number of (merged) axes of a strided launch, an override constant: the index arithmetic below
// is then unrolled, and a one-axis launch divides nothing (CPU drivers cannot vectorise division).
override RANK: u32 = 1u;
// Whether the innermost axis is a multiple of 4, so that a quad shares its outer coordinates and
// its offsets are those of its first element plus 0..3 innermost strides.
override ALIGNED: bool = true;

// The strides of operands 0, 1 and 2 along axis d (absent operands have zero strides).
fn strides_at(d: u32) -> vec3<u32> {
    return vec3<u32>(P.s0[d / 4u][d % 4u], P.s1[d / 4u][d % 4u], P.s2[d / 4u][d % 4u]);
}

// Offsets of flat output index i in operands 0, 1 and 2. The index is split into coordinates
// once for all.
fn strided_offsets(i: u32) -> vec3<u32> {
    var rem = i;
    var off = vec3<u32>(0u);
    for (var d = RANK - 1u; d > 0u; d--) {
        let s = P.shape[d / 4u][d % 4u];
        off += (rem % s) * strides_at(d);
        rem = rem / s;
    }
    return off + rem * strides_at(0u);
}

// The offsets of quad q's four elements in the three operands: entry k is element 4q + k's.
fn quad_offsets(q: u32) -> array<vec3<u32>, 4> {
    if (ALIGNED) {
        let o = strided_offsets(4u * q);
        let s = strides_at(RANK - 1u);
        return array<vec3<u32>, 4>(o, o + s, o + 2u * s, o + 3u * s);
    }
    return array<vec3<u32>, 4>(
        strided_offsets(4u * q),
        strided_offsets(4u * q + 1u),
        strided_offsets(4u * q + 2u),
        strided_offsets(4u * q + 3u),
    );
}
