// Prepended to every kernel, after the parameter structs (engine/src/backend/gpu/params.rs).
// Binding 0 holds the launch's parameters, a uniform buffer declared by each kernel as
// `var<uniform> P: Name;` (GPUs serve uniforms from a constant cache to every invocation at
// once). Storage bindings 1.. are the kernel's buffers.

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
