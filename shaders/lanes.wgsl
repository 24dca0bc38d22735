// Prepended to every kernel in one of two forms, so that one source serves adapters with and
// without subgroups. Where the software profile runs on subgroups of exactly 8 lanes (lavapipe:
// its 8-wide vectors, 8 consecutive invocations of a one-dimensional workgroup), invocations that
// all need the same rows load a vec4 each and share them: CPU drivers pay every storage load lane
// by lane, while a broadcast from a constant lane is one extract and one splat. Elsewhere LANES is
// 1 and each invocation loads everything itself. Every lane of a subgroup must reach each call.

// Eight vec4s: the one each lane of a subgroup holds, c0 from lane 0 and so on.
struct Eight {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
    c4: vec4<f32>,
    c5: vec4<f32>,
    c6: vec4<f32>,
    c7: vec4<f32>,
}

//!lanes 8
const LANES: u32 = 8u;

fn share(v: vec4<f32>) -> Eight {
    return Eight(
        subgroupBroadcast(v, 0u),
        subgroupBroadcast(v, 1u),
        subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u),
        subgroupBroadcast(v, 4u),
        subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u),
    );
}

// `row` with its first 8 vec4s the subgroup's shared ones (a row loaded one vec4 per lane).
fn put_shared(row: array<vec4<f32>, 32>, e: Eight) -> array<vec4<f32>, 32> {
    var r = row;
    r[0] = e.c0;
    r[1] = e.c1;
    r[2] = e.c2;
    r[3] = e.c3;
    r[4] = e.c4;
    r[5] = e.c5;
    r[6] = e.c6;
    r[7] = e.c7;
    return r;
}

fn lanes_max(x: u32) -> u32 {
    return subgroupMax(x);
}

fn lanes_min(x: u32) -> u32 {
    return subgroupMin(x);
}

//!lanes 1
const LANES: u32 = 1u;

// Callers check LANES before sharing: these keep one source compiling without subgroups.
fn share(v: vec4<f32>) -> Eight {
    return Eight(v, v, v, v, v, v, v, v);
}

fn put_shared(row: array<vec4<f32>, 32>, e: Eight) -> array<vec4<f32>, 32> {
    return row;
}

fn lanes_max(x: u32) -> u32 {
    return x;
}

fn lanes_min(x: u32) -> u32 {
    return x;
}
