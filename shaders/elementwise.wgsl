// Element-wise kernels. The formulas mirror backend/cpu/elementwise.rs exactly; the op constants
// (UNARY_*, BINARY_*) are generated from backend/mod.rs's enums.

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
        case UNARY_NEG: { return -x; }
        case UNARY_EXP: { return exp(x); }
        case UNARY_LOG: { return log(x); }
        case UNARY_SQRT: { return sqrt(x); }
        case UNARY_RSQRT: { return inverseSqrt(x); }
        case UNARY_ABS: { return abs(x); }
        case UNARY_RELU: { return select(x, 0.0, x < 0.0); } // NaN stays NaN, as in PyTorch
        case UNARY_GELU_TANH: { return 0.5 * x * (1.0 + tanh_safe(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))); }
        case UNARY_GELU_ERF: { return 0.5 * x * (1.0 + erf_approx(x * INV_SQRT_2)); }
        case UNARY_SIGMOID: { return sigmoid(x); }
        case UNARY_TANH: { return tanh_safe(x); }
        case UNARY_SILU: { return x * sigmoid(x); }
        case UNARY_SIGN: { return sign(x); }
        case UNARY_RECIP: { return 1.0 / x; }
        case UNARY_SQUARE: { return x * x; }
        case UNARY_ADD_SCALAR: { return x + a; }
        case UNARY_MUL_SCALAR: { return x * a; }
        case UNARY_POW_SCALAR: { return pow_real(x, a); }
        case UNARY_CLAMP: { return min(max(x, a), b); }
        default: { return x; }
    }
}

fn unary_df(op: u32, x: f32, a: f32, b: f32) -> f32 {
    switch op {
        case UNARY_NEG: { return -1.0; }
        case UNARY_EXP: { return exp(x); }
        case UNARY_LOG: { return 1.0 / x; }
        case UNARY_SQRT: { return 0.5 / sqrt(x); }
        case UNARY_RSQRT: { return -0.5 / (x * sqrt(x)); }
        case UNARY_ABS: { return sign(x); }
        case UNARY_RELU: { return select(0.0, 1.0, x > 0.0); }
        case UNARY_GELU_TANH: {
            let t = tanh_safe(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
        }
        case UNARY_GELU_ERF: { return 0.5 * (1.0 + erf_approx(x * INV_SQRT_2)) + x * exp(-0.5 * x * x) * INV_SQRT_2PI; }
        case UNARY_SIGMOID: {
            let s = sigmoid(x);
            return s * (1.0 - s);
        }
        case UNARY_TANH: {
            let t = tanh_safe(x);
            return 1.0 - t * t;
        }
        case UNARY_SILU: {
            let s = sigmoid(x);
            return s * (1.0 + x * (1.0 - s));
        }
        case UNARY_SIGN: { return 0.0; }
        case UNARY_RECIP: { return -1.0 / (x * x); }
        case UNARY_SQUARE: { return 2.0 * x; }
        case UNARY_ADD_SCALAR: { return 1.0; }
        case UNARY_MUL_SCALAR: { return a; }
        case UNARY_POW_SCALAR: { return select(a * pow_real(x, a - 1.0), 0.0, a == 0.0); }
        case UNARY_CLAMP: { return select(0.0, 1.0, x >= a && x <= b); }
        default: { return 0.0; }
    }
}

fn binary_f(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case BINARY_ADD: { return a + b; }
        case BINARY_SUB: { return a - b; }
        case BINARY_MUL: { return a * b; }
        case BINARY_DIV: { return a / b; }
        case BINARY_POW: { return pow_real(a, b); }
        case BINARY_MAX: { return max(a, b); }
        case BINARY_MIN: { return min(a, b); }
        case BINARY_EQ: { return select(0.0, 1.0, a == b); }
        case BINARY_NE: { return select(0.0, 1.0, a != b); }
        case BINARY_LT: { return select(0.0, 1.0, a < b); }
        case BINARY_LE: { return select(0.0, 1.0, a <= b); }
        case BINARY_GT: { return select(0.0, 1.0, a > b); }
        case BINARY_GE: { return select(0.0, 1.0, a >= b); }
        default: { return 0.0; }
    }
}

//!kernel unary
@group(0) @binding(0) var<uniform> P: Quads;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = P.a;
    let b = P.b;
    for (var q = flat_id(gid, nwg); q < P.quads; q += launched(nwg)) {
        let x = X[q];
        Y[q] = vec4<f32>(unary_f(OP, x.x, a, b), unary_f(OP, x.y, a, b), unary_f(OP, x.z, a, b), unary_f(OP, x.w, a, b));
    }
}

//!kernel unary_backward
@group(0) @binding(0) var<uniform> P: Quads;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = P.a;
    let b = P.b;
    for (var q = flat_id(gid, nwg); q < P.quads; q += launched(nwg)) {
        let x = X[q];
        let d = vec4<f32>(unary_df(OP, x.x, a, b), unary_df(OP, x.y, a, b), unary_df(OP, x.z, a, b), unary_df(OP, x.w, a, b));
        Y[q] = G[q] * d;
    }
}

//!kernel binary
@group(0) @binding(0) var<uniform> P: Strided;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var q = flat_id(gid, nwg); q < P.quads; q += launched(nwg)) {
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
// Y = C != 0 ? A : B; three strided operands (C, A, B).
@group(0) @binding(0) var<uniform> P: Strided;
@group(0) @binding(1) var<storage, read> C: array<f32>;
@group(0) @binding(2) var<storage, read> A: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<vec4<f32>>;

fn pick(o: vec3<u32>) -> f32 {
    return select(B[o.z], A[o.y], C[o.x] != 0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var q = flat_id(gid, nwg); q < P.quads; q += launched(nwg)) {
        let o = quad_offsets(q);
        Y[q] = vec4<f32>(pick(o[0]), pick(o[1]), pick(o[2]), pick(o[3]));
    }
}
