// Prepended to every kernel. Binding 0 holds the launch's parameters as u32 words
// (floats are passed as their bit patterns); storage bindings 1.. are the kernel's buffers.
@group(0) @binding(0) var<storage, read> P: array<u32>;

fn pf(i: u32) -> f32 {
    return bitcast<f32>(P[i]);
}

// Index of this invocation in a 1-D launch of 256-wide workgroups laid out on a 2-D grid
// (a grid dimension holds at most 65,535 workgroups).
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Index of this workgroup in a launch of one workgroup per row, on a 2-D grid.
fn group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
