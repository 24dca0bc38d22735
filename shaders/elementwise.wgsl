// Element-wise kernels. The op codes and formulas mirror backend/cpu/elementwise.rs exactly.

// The op, an override constant: each op is its own pipeline, so that a CPU driver, which runs
// every arm of a branch it cannot prove uniform, compiles only the arm taken.
override OP: u32 = 0u;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

// tanh without the inf/inf of large arguments.
fn tanh_safe(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf_approx(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return select(y, -y, x < 0.0);
}

// x^p with the real-valued results of integer powers of negative bases (WGSL's pow is NaN there).
fn pow_real(x: f32, p: f32) -> f32 {
    if (p == 0.0) {
        return 1.0;
    }
    if (x < 0.0 && p == floor(p)) {
        let m = pow(-x, p);
        return select(m, -m, (abs(p) % 2.0) == 1.0);
    }
    return pow(x, p);
}

fn unary_f(op: u32, x: f32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return -x; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return inverseSqrt(x); }
        case 5u: { return abs(x); }
        case 6u: { return select(x, 0.0, x < 0.0); } // NaN stays NaN, as in PyTorch
        case 7u: { return 0.5 * x * (1.0 + tanh_safe(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))); }
        case 8u: { return 0.5 * x * (1.0 + erf_approx(x * INV_SQRT_2)); }
        case 9u: { return sigmoid(x); }
        case 10u: { return tanh_safe(x); }
        case 11u: { return x * sigmoid(x); }
        case 12u: { return sign(x); }
        case 13u: { return 1.0 / x; }
        case 14u: { return x * x; }
        case 15u: { return x + a; }
        case 16u: { return x * a; }
        case 17u: { return pow_real(x, a); }
        case 18u: { return min(max(x, a), b); }
        default: { return x; }
    }
}

fn unary_df(op: u32, x: f32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return -1.0; }
        case 1u: { return exp(x); }
        case 2u: { return 1.0 / x; }
        case 3u: { return 0.5 / sqrt(x); }
        case 4u: { return -0.5 / (x * sqrt(x)); }
        case 5u: { return sign(x); }
        case 6u: { return select(0.0, 1.0, x > 0.0); }
        case 7u: {
            let t = tanh_safe(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
        }
        case 8u: { return 0.5 * (1.0 + erf_approx(x * INV_SQRT_2)) + x * exp(-0.5 * x * x) * INV_SQRT_2PI; }
        case 9u: {
            let s = sigmoid(x);
            return s * (1.0 - s);
        }
        case 10u: {
            let t = tanh_safe(x);
            return 1.0 - t * t;
        }
        case 11u: {
            let s = sigmoid(x);
            return s * (1.0 + x * (1.0 - s));
        }
        case 12u: { return 0.0; }
        case 13u: { return -1.0 / (x * x); }
        case 14u: { return 2.0 * x; }
        case 15u: { return 1.0; }
        case 16u: { return a; }
        case 17u: { return select(a * pow_real(x, a - 1.0), 0.0, a == 0.0); }
        case 18u: { return select(0.0, 1.0, x >= a && x <= b); }
        default: { return 0.0; }
    }
}

fn binary_f(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return pow_real(a, b); }
        case 5u: { return max(a, b); }
        case 6u: { return min(a, b); }
        case 7u: { return select(0.0, 1.0, a == b); }
        case 8u: { return select(0.0, 1.0, a != b); }
        case 9u: { return select(0.0, 1.0, a < b); }
        case 10u: { return select(0.0, 1.0, a <= b); }
        case 11u: { return select(0.0, 1.0, a > b); }
        case 12u: { return select(0.0, 1.0, a >= b); }
        default: { return 0.0; }
    }
}

//!kernel unary
// P: [quads, a, b]
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = pf(1u);
    let b = pf(2u);
    for (var q = flat_id(gid, nwg); q < P[0]; q += launched(nwg)) {
        let x = X[q];
        Y[q] = vec4<f32>(unary_f(OP, x.x, a, b), unary_f(OP, x.y, a, b), unary_f(OP, x.z, a, b), unary_f(OP, x.w, a, b));
    }
}

//!kernel unary_backward
// P: [quads, a, b]
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = pf(1u);
    let b = pf(2u);
    for (var q = flat_id(gid, nwg); q < P[0]; q += launched(nwg)) {
        let x = X[q];
        let d = vec4<f32>(unary_df(OP, x.x, a, b), unary_df(OP, x.y, a, b), unary_df(OP, x.z, a, b), unary_df(OP, x.w, a, b));
        Y[q] = G[q] * d;
    }
}

//!kernel binary
// P: strided, two operands; P[0] counts quads.
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var q = flat_id(gid, nwg); q < P[0]; q += launched(nwg)) {
        let o = quad_offsets(q);
        Y[q] = vec4<f32>(
            binary_f(OP, A[o[0].x], B[o[0].y]),
            binary_f(OP, A[o[1].x], B[o[1].y]),
            binary_f(OP, A[o[2].x], B[o[2].y]),
            binary_f(OP, A[o[3].x], B[o[3].y]),
        );
    }
}

//!kernel select
// Y = C != 0 ? A : B. P: strided, three operands (C, A, B); P[0] counts quads.
@group(0) @binding(1) var<storage, read> C: array<f32>;
@group(0) @binding(2) var<storage, read> A: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<vec4<f32>>;

fn pick(o: vec3<u32>) -> f32 {
    return select(B[o.z], A[o.y], C[o.x] != 0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var q = flat_id(gid, nwg); q < P[0]; q += launched(nwg)) {
        let o = quad_offsets(q);
        Y[q] = vec4<f32>(pick(o[0]), pick(o[1]), pick(o[2]), pick(o[3]));
    }
}
