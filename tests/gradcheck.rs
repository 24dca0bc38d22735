//! Finite-difference gradient checks in f64 on the CPU for every differentiable op, forward values
//! against hand-computed results, autograd semantics, and error messages of misuse.
//!

mod common;

use common::*;
use selfsup_engine::{embedding, is_grad_enabled, no_grad, DType, Device, NoGradGuard, Tensor};

/// Odd shapes every unary op is checked on (rank 0 included).
const UNARY_SHAPES: [&[usize]; 6] = [&[], &[1], &[3], &[7], &[33], &[3, 7]];

fn unary_case(op: &str, gen: impl Fn(&[usize], u64) -> Vec<f64>, f: impl Fn(&Tensor) -> Tensor) {
    for (k, shape) in UNARY_SHAPES.iter().enumerate() {
        let x = leaf64(gen(shape, 100 + k as u64), shape);
        gradcheck(&format!("{op} {shape:?}"), &[x], |t| f(&t[0]));
    }
}

/// Pairs of shapes for broadcasting binary ops: same shape, trailing broadcast, both sides
/// broadcast, rank-0 against a matrix, and a size-1 dimension against 33.
const BINARY_SHAPES: [(&[usize], &[usize]); 6] = [
    (&[3, 7], &[3, 7]),
    (&[3, 7], &[7]),
    (&[3, 1, 7], &[5, 1]),
    (&[], &[3, 7]),
    (&[33, 1], &[1]),
    (&[1, 33], &[3, 1]),
];

fn binary_case(
    op: &str,
    gen_a: impl Fn(&[usize], u64) -> Vec<f64>,
    gen_b: impl Fn(&[usize], u64) -> Vec<f64>,
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) {
    for (k, (sa, sb)) in BINARY_SHAPES.iter().enumerate() {
        let a = leaf64(gen_a(sa, 200 + k as u64), sa);
        let b = leaf64(gen_b(sb, 300 + k as u64), sb);
        gradcheck(&format!("{op} {sa:?} {sb:?}"), &[a, b], |t| f(&t[0], &t[1]));
    }
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(
    expected = "gradcheck x·detach(x): input 0 (shape [3, 7]) element 0 [0, 0]: analytic"
)]
fn harness_catches_a_wrong_gradient() {
    // d/dx (x · stopgrad(x)) is x analytically here but 2x numerically: the checker must object.
    gradcheck(
        "x·detach(x)",
        &[leaf64(normal(&[3, 7], 1), &[3, 7])],
        |t| &t[0] * &t[0].detach(),
    );
}

#[test]
#[should_panic(expected = "backward() left no gradient on this input")]
fn harness_catches_a_missing_gradient() {
    let (x, y) = (leaf64(normal(&[3], 1), &[3]), leaf64(normal(&[3], 2), &[3]));
    gradcheck("detach(x) + y", &[x, y], |t| &t[0].detach() + &t[1]);
}

#[test]
fn harness_inputs_stay_in_their_domain() {
    let a = away_from(&[10_000], 1, &[-0.5, 0.5], 0.05);
    assert!(a
        .iter()
        .all(|v| (v - 0.5).abs() >= 0.05 && (v + 0.5).abs() >= 0.05));
    assert!(positive(&[10_000], 2)
        .iter()
        .all(|&v| (0.5..2.0).contains(&v)));
    let mut d = distinct(&[3, 7, 5], 3);
    d.sort_by(f64::total_cmp);
    assert!(
        d.windows(2).all(|w| w[1] - w[0] >= 0.005),
        "distinct values must be well separated"
    );
    assert_eq!(normal(&[5], 9), normal(&[5], 9), "inputs are seeded");
}

// ---------------------------------------------------------------------------------------------
// Element-wise binary ops
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_add() {
    binary_case("add", normal, normal, |a, b| a.add(b));
}

#[test]
fn grad_sub() {
    binary_case("sub", normal, normal, |a, b| a.sub(b));
}

#[test]
fn grad_mul() {
    binary_case("mul", normal, normal, |a, b| a.mul(b));
}

#[test]
fn grad_div() {
    binary_case(
        "div",
        normal,
        |s, seed| away_from(s, seed, &[0.0], 0.5),
        |a, b| a.div(b),
    );
}

#[test]
fn grad_pow_tensor_exponent() {
    binary_case("pow", positive, normal, |a, b| a.pow(b));
}

#[test]
fn grad_maximum_minimum() {
    for (k, (sa, sb)) in BINARY_SHAPES.iter().enumerate() {
        // One pool of distinct values split in two: no ties anywhere, even after broadcasting.
        let pool = distinct(&[numel(sa) + numel(sb)], 400 + k as u64);
        let a = leaf64(pool[..numel(sa)].to_vec(), sa);
        let b = leaf64(pool[numel(sa)..].to_vec(), sb);
        gradcheck(
            &format!("maximum {sa:?} {sb:?}"),
            &[a.clone(), b.clone()],
            |t| t[0].maximum(&t[1]),
        );
        gradcheck(&format!("minimum {sa:?} {sb:?}"), &[a, b], |t| {
            t[0].minimum(&t[1])
        });
    }
}

#[test]
fn grad_binary_with_one_constant_operand() {
    let a = leaf64(normal(&[3, 7], 1), &[3, 7]);
    let b = const64(away_from(&[7], 2, &[0.0], 0.5), &[7]);
    gradcheck("mul by constant", &[a.clone(), b.clone()], |t| {
        t[0].mul(&t[1])
    });
    gradcheck("div by constant", &[a.clone(), b.clone()], |t| {
        t[0].div(&t[1])
    });
    let x = leaf64(positive(&[3, 7], 3), &[3, 7]);
    gradcheck("constant / x", &[b, x], |t| t[0].div(&t[1]));
}

#[test]
fn grad_operator_overloads() {
    let s = [3usize, 7];
    let a = leaf64(normal(&s, 1), &s);
    let b = leaf64(away_from(&[7], 2, &[0.0], 0.5), &[7]);
    let ab = [a.clone(), b.clone()];
    gradcheck("&a + &b", &ab, |t| &t[0] + &t[1]);
    gradcheck("a - b (owned)", &ab, |t| t[0].clone() - t[1].clone());
    gradcheck("a * &b (mixed)", &ab, |t| t[0].clone() * &t[1]);
    gradcheck("&a / b (mixed)", &ab, |t| &t[0] / t[1].clone());
    gradcheck("-&a", [a.clone()], |t| -&t[0]);
    gradcheck("-a (owned)", [a.clone()], |t| -(t[0].clone()));
    gradcheck("&a + 1.5", [a.clone()], |t| &t[0] + 1.5);
    gradcheck("a - 2.0", [a.clone()], |t| t[0].clone() - 2.0);
    gradcheck("&a * -3.0", [a.clone()], |t| &t[0] * -3.0);
    gradcheck("a / 4.0", [a.clone()], |t| t[0].clone() / 4.0);
    gradcheck("expression", &ab, |t| {
        (&t[0] * 2.0 - &t[1]) * (&t[0] / &t[1] + 1.0) - -&t[1]
    });
}

// ---------------------------------------------------------------------------------------------
// Element-wise unary ops
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_neg() {
    unary_case("neg", normal, |x| x.neg());
}

#[test]
fn grad_exp() {
    unary_case("exp", normal, |x| x.exp());
}

#[test]
fn grad_log() {
    unary_case("log", positive, |x| x.log());
}

#[test]
fn grad_sqrt() {
    unary_case("sqrt", positive, |x| x.sqrt());
}

#[test]
fn grad_rsqrt() {
    unary_case("rsqrt", positive, |x| x.rsqrt());
}

#[test]
fn grad_abs() {
    unary_case(
        "abs",
        |s, seed| away_from(s, seed, &[0.0], 0.05),
        |x| x.abs(),
    );
}

#[test]
fn grad_clamp() {
    // Values on both sides of both bounds, none within 0.05 of a bound.
    unary_case(
        "clamp",
        |s, seed| away_from(s, seed, &[-0.5, 0.5], 0.05),
        |x| x.clamp(-0.5, 0.5),
    );
    unary_case(
        "clamp to [0, inf)",
        |s, seed| away_from(s, seed, &[0.0], 0.05),
        |x| x.clamp(0.0, f64::INFINITY),
    );
}

#[test]
fn grad_relu() {
    unary_case(
        "relu",
        |s, seed| away_from(s, seed, &[0.0], 0.05),
        |x| x.relu(),
    );
}

#[test]
fn grad_gelu_erf() {
    unary_case("gelu", |s, seed| uniform(s, -4.0, 4.0, seed), |x| x.gelu());
}

#[test]
fn grad_gelu_tanh() {
    unary_case(
        "gelu_tanh",
        |s, seed| uniform(s, -4.0, 4.0, seed),
        |x| x.gelu_tanh(),
    );
}

#[test]
fn grad_sigmoid() {
    unary_case(
        "sigmoid",
        |s, seed| uniform(s, -6.0, 6.0, seed),
        |x| x.sigmoid(),
    );
}

#[test]
fn grad_tanh() {
    unary_case("tanh", |s, seed| uniform(s, -3.0, 3.0, seed), |x| x.tanh());
}

#[test]
fn grad_silu() {
    unary_case("silu", |s, seed| uniform(s, -5.0, 5.0, seed), |x| x.silu());
}

#[test]
fn grad_square() {
    unary_case("square", normal, |x| x.square());
}

#[test]
fn grad_recip() {
    unary_case(
        "recip",
        |s, seed| away_from(s, seed, &[0.0], 0.3),
        |x| x.recip(),
    );
}

#[test]
fn grad_sign_is_zero() {
    unary_case(
        "sign",
        |s, seed| away_from(s, seed, &[0.0], 0.05),
        |x| x.sign(),
    );
}

#[test]
fn grad_add_scalar_mul_scalar() {
    unary_case("add_scalar", normal, |x| x.add_scalar(-2.25));
    unary_case("mul_scalar", normal, |x| x.mul_scalar(1.75));
    unary_case("mul_scalar 0", normal, |x| x.mul_scalar(0.0));
}

#[test]
fn grad_powf() {
    unary_case("powf 2.5", positive, |x| x.powf(2.5));
    unary_case("powf -1.5", positive, |x| x.powf(-1.5));
    unary_case("powf 0.5", positive, |x| x.powf(0.5));
    unary_case("powf 3 (negative base)", normal, |x| x.powf(3.0));
    unary_case("powf 1", normal, |x| x.powf(1.0));
    unary_case("powf 0", normal, |x| x.powf(0.0));
}

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_where() {
    let cond = const64(bernoulli(&[3, 7], 0.5, 1), &[3, 7]);
    let a = leaf64(normal(&[3, 7], 2), &[3, 7]);
    let b = leaf64(normal(&[7], 3), &[7]);
    gradcheck(
        "where (3,7) (7)",
        &[cond.clone(), a.clone(), b.clone()],
        |t| t[1].where_(&t[0], &t[2]),
    );
    // Condition broadcast along rows; then both branches broadcast.
    let rows = const64(vec![1.0, 0.0, 1.0], &[3, 1]);
    gradcheck(
        "where cond (3,1)",
        &[rows.clone(), a.clone(), b.clone()],
        |t| t[1].where_(&t[0], &t[2]),
    );
    let col = leaf64(normal(&[3, 1], 4), &[3, 1]);
    gradcheck("where all broadcast", &[cond, col, b], |t| {
        t[1].where_(&t[0], &t[2])
    });
}

#[test]
fn grad_masked_fill() {
    let x = leaf64(normal(&[3, 7], 1), &[3, 7]);
    let mask = const64(bernoulli(&[1, 7], 0.4, 2), &[1, 7]);
    gradcheck("masked_fill", &[x.clone(), mask], |t| {
        t[0].masked_fill(&t[1], -2.5)
    });
    let full = const64(bernoulli(&[3, 7], 0.5, 3), &[3, 7]);
    gradcheck("masked_fill -inf then exp", &[x, full], |t| {
        t[0].masked_fill(&t[1], f64::NEG_INFINITY).exp()
    });
}

// ---------------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------------

const RED_SHAPE: [usize; 3] = [3, 7, 5];

#[test]
fn grad_sum() {
    let x = leaf64(normal(&RED_SHAPE, 1), &RED_SHAPE);
    for ax in [0isize, 1, 2, -1, -3] {
        for keep in [false, true] {
            gradcheck(&format!("sum axis {ax} keepdim {keep}"), [x.clone()], |t| {
                t[0].sum(ax, keep)
            });
        }
    }
    gradcheck("sum_axes [0, 2]", [x.clone()], |t| {
        t[0].sum_axes(&[0, 2], false)
    });
    gradcheck("sum_axes [-1, 0] keepdim", [x.clone()], |t| {
        t[0].sum_axes(&[-1, 0], true)
    });
    gradcheck("sum_axes [1, 1] (repeated)", [x.clone()], |t| {
        t[0].sum_axes(&[1, 1], false)
    });
    gradcheck("sum_axes [] (all)", [x.clone()], |t| {
        t[0].sum_axes(&[], true)
    });
    gradcheck("sum_all", [x.clone()], |t| t[0].sum_all());
    let v = leaf64(normal(&[33], 2), &[33]);
    gradcheck("sum 1-d", &[v], |t| t[0].sum(0, false));
}

#[test]
fn grad_mean() {
    let x = leaf64(normal(&RED_SHAPE, 1), &RED_SHAPE);
    for ax in [0isize, 1, -1] {
        for keep in [false, true] {
            gradcheck(
                &format!("mean axis {ax} keepdim {keep}"),
                [x.clone()],
                |t| t[0].mean(ax, keep),
            );
        }
    }
    gradcheck("mean_axes [0, 1]", [x.clone()], |t| {
        t[0].mean_axes(&[0, 1], false)
    });
    gradcheck("mean_axes [2, 0] keepdim", [x.clone()], |t| {
        t[0].mean_axes(&[2, 0], true)
    });
    gradcheck("mean_all", &[x], |t| t[0].mean_all());
}

#[test]
fn grad_var() {
    let x = leaf64(normal(&RED_SHAPE, 1), &RED_SHAPE);
    for ax in [0isize, 1, -1] {
        for keep in [false, true] {
            for corr in [0usize, 1] {
                gradcheck(
                    &format!("var axis {ax} keepdim {keep} correction {corr}"),
                    [x.clone()],
                    |t| t[0].var(ax, keep, corr),
                );
            }
        }
    }
    gradcheck("var_axes [0, 2]", [x.clone()], |t| {
        t[0].var_axes(&[0, 2], false, 1)
    });
    gradcheck("var_axes [] (all) keepdim", &[x], |t| {
        t[0].var_axes(&[], true, 0)
    });
}

#[test]
fn grad_max_min() {
    let x = leaf64(distinct(&RED_SHAPE, 1), &RED_SHAPE);
    for ax in [0isize, 1, 2, -2] {
        for keep in [false, true] {
            gradcheck(&format!("max axis {ax} keepdim {keep}"), [x.clone()], |t| {
                t[0].max(ax, keep)
            });
            gradcheck(&format!("min axis {ax} keepdim {keep}"), [x.clone()], |t| {
                t[0].min(ax, keep)
            });
        }
    }
    let v = leaf64(distinct(&[33], 2), &[33]);
    gradcheck("max 1-d", [v.clone()], |t| t[0].max(0, false));
    gradcheck("min 1-d", &[v], |t| t[0].min(-1, true));
}

// ---------------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------------

/// The fused linear op (bias added in the product's pass): gradients for input, weight and
/// bias, on a small input and on one large enough to be split into row blocks across cores, where
/// it must also equal the composed `x·wᵀ + b`.
#[test]
fn grad_linear() {
    let x = leaf64(normal(&[2, 3, 5], 50), &[2, 3, 5]);
    let w = leaf64(normal(&[4, 5], 51), &[4, 5]);
    let b = leaf64(normal(&[4], 52), &[4]);
    gradcheck("linear with bias", &[x.clone(), w.clone(), b], |t| {
        t[0].linear(&t[1], Some(&t[2]))
    });
    gradcheck("linear without bias", &[x, w], |t| t[0].linear(&t[1], None));
    let (x, w, b) = (
        const64(normal(&[700, 48], 53), &[700, 48]),
        const64(normal(&[40, 48], 54), &[40, 48]),
        const64(normal(&[40], 55), &[40]),
    );
    let want = &x.matmul_nt(&w) + &b;
    assert_close64(
        "linear against x·wᵀ + b",
        &x.linear(&w, Some(&b)).to_vec_f64(),
        &want.to_vec_f64(),
        1e-12,
    );
}

#[test]
fn grad_matmul() {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[1, 1], &[1, 1]),
        (&[3, 7], &[7, 1]),
        (&[1, 7], &[7, 33]),
        (&[5, 3], &[3, 7]),
        (&[2, 5, 7], &[7, 4]),
        (&[3, 1, 5, 7], &[2, 7, 4]),
        (&[2, 1, 3, 4], &[1, 3, 4, 2]),
    ];
    for (k, (sa, sb)) in cases.iter().enumerate() {
        let a = leaf64(normal(sa, 10 + k as u64), sa);
        let b = leaf64(normal(sb, 20 + k as u64), sb);
        gradcheck(&format!("matmul {sa:?} @ {sb:?}"), &[a, b], |t| {
            t[0].matmul(&t[1])
        });
    }
}

#[test]
fn grad_matmul_transposed() {
    let a = leaf64(normal(&[2, 5, 7], 1), &[2, 5, 7]);
    let b = leaf64(normal(&[4, 7], 2), &[4, 7]);
    gradcheck("matmul_nt (2,5,7) @ (4,7)ᵀ", &[a.clone(), b], |t| {
        t[0].matmul_nt(&t[1])
    });
    let c = leaf64(normal(&[7, 3], 3), &[7, 3]);
    gradcheck(
        "matmul_tn (7,5)ᵀ @ (7,3)",
        &[leaf64(normal(&[7, 5], 4), &[7, 5]), c],
        |t| t[0].matmul_tn(&t[1]),
    );
    let bt = leaf64(normal(&[3, 1, 4, 5], 5), &[3, 1, 4, 5]);
    gradcheck(
        "matmul_tn batched broadcast",
        &[leaf64(normal(&[2, 4, 3], 6), &[2, 4, 3]), bt],
        |t| t[0].matmul_tn(&t[1]),
    );
    // Every combination of transposes, with batch broadcasting on both sides.
    for ta in [false, true] {
        for tb in [false, true] {
            let sa: Vec<usize> = if ta {
                vec![2, 1, 7, 5]
            } else {
                vec![2, 1, 5, 7]
            };
            let sb: Vec<usize> = if tb { vec![3, 4, 7] } else { vec![3, 7, 4] };
            let a = leaf64(normal(&sa, 7), &sa);
            let b = leaf64(normal(&sb, 8), &sb);
            gradcheck(&format!("matmul_ex ta={ta} tb={tb}"), &[a, b], |t| {
                t[0].matmul_ex(&t[1], ta, tb)
            });
        }
    }
}

#[test]
fn matmul_values_match_naive_product() {
    let (sa, sb) = ([3usize, 1, 5, 7], [2usize, 7, 4]);
    let (a, b) = (normal(&sa, 1), normal(&sb, 2));
    let out = const64(a.clone(), &sa).matmul(&const64(b.clone(), &sb));
    assert_eq!(out.shape(), [3, 2, 5, 4]);
    let mut want = vec![0.0; 3 * 2 * 5 * 4];
    for i in 0..3 {
        for j in 0..2 {
            for r in 0..5 {
                for c in 0..4 {
                    want[((i * 2 + j) * 5 + r) * 4 + c] = (0..7)
                        .map(|k| a[(i * 5 + r) * 7 + k] * b[(j * 7 + k) * 4 + c])
                        .sum();
                }
            }
        }
    }
    assert_close64("matmul (3,1,5,7)@(2,7,4)", &out.to_vec_f64(), &want, 1e-12);
    let tn = const64(a[..35].to_vec(), &[7, 5]).matmul_tn(&const64(b[..28].to_vec(), &[7, 4]));
    let explicit = const64(a[..35].to_vec(), &[7, 5])
        .t()
        .matmul(&const64(b[..28].to_vec(), &[7, 4]));
    assert_close64(
        "matmul_tn vs t().matmul",
        &tn.to_vec_f64(),
        &explicit.to_vec_f64(),
        1e-12,
    );
}

// ---------------------------------------------------------------------------------------------
// Softmax and normalisation
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_softmax_log_softmax() {
    let s = [3usize, 7, 5];
    let x = leaf64(normal(&s, 1).into_iter().map(|v| 2.0 * v).collect(), &s);
    for ax in [-1isize, 2, 1, 0] {
        gradcheck(&format!("softmax axis {ax}"), [x.clone()], |t| {
            t[0].softmax(ax)
        });
        gradcheck(&format!("log_softmax axis {ax}"), [x.clone()], |t| {
            t[0].log_softmax(ax)
        });
    }
    let v = leaf64(normal(&[33], 2), &[33]);
    gradcheck("softmax 1-d", [v.clone()], |t| t[0].softmax(0));
    gradcheck("log_softmax 1-d", &[v], |t| t[0].log_softmax(-1));
    let one = leaf64(vec![0.3; 7], &[7, 1]);
    gradcheck("softmax over a size-1 axis", [one.clone()], |t| {
        t[0].softmax(1)
    });
    gradcheck("log_softmax over a size-1 axis", &[one], |t| {
        t[0].log_softmax(-1)
    });
}

/// The fused affine layer norm equals normalising then scaling and shifting, values and all
/// three gradients, on rows enough to be split across cores.
#[test]
fn layer_norm_affine_matches_composed() {
    let x = leaf64(normal(&[700, 64], 5), &[700, 64]);
    let w = leaf64(uniform(&[64], 0.5, 1.5, 6), &[64]);
    let b = leaf64(normal(&[64], 7), &[64]);
    let up = const64(normal(&[700, 64], 8), &[700, 64]);
    let run = |fused: bool| {
        for t in [&x, &w, &b] {
            t.zero_grad();
        }
        let y = if fused {
            x.layer_norm(Some(&w), Some(&b), 1e-5)
        } else {
            &(&x.layer_norm(None, None, 1e-5) * &w) + &b
        };
        (&y * &up).sum_all().backward();
        let mut v = vec![y.to_vec_f64()];
        v.extend([&x, &w, &b].map(|t| t.grad().expect("a gradient").to_vec_f64()));
        v
    };
    let (got, want) = (run(true), run(false));
    for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
        assert_close64(&format!("fused layer_norm {name}"), g, w, 1e-10);
    }
}

#[test]
fn grad_layer_norm() {
    let x = leaf64(normal(&[3, 7], 1), &[3, 7]);
    let w = leaf64(uniform(&[7], 0.5, 1.5, 2), &[7]);
    let b = leaf64(normal(&[7], 3), &[7]);
    gradcheck(
        "layer_norm affine",
        &[x.clone(), w.clone(), b.clone()],
        |t| t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5),
    );
    gradcheck("layer_norm plain", [x.clone()], |t| {
        t[0].layer_norm(None, None, 1e-5)
    });
    gradcheck("layer_norm weight only", &[x.clone(), w], |t| {
        t[0].layer_norm(Some(&t[1]), None, 1e-5)
    });
    gradcheck("layer_norm bias only", &[x, b], |t| {
        t[0].layer_norm(None, Some(&t[1]), 1e-5)
    });
    let x3 = leaf64(normal(&[2, 3, 33], 4), &[2, 3, 33]);
    gradcheck("layer_norm (2,3,33) eps 0.1", &[x3], |t| {
        t[0].layer_norm(None, None, 0.1)
    });
}

#[test]
fn layer_norm_values() {
    let x = [1.0, 2.0, 3.0, 6.0];
    let y = const64(x.to_vec(), &[1, 4])
        .layer_norm(
            Some(&const64(vec![1.0, 2.0, 1.0, 1.0], &[4])),
            Some(&const64(vec![0.0, 0.0, 0.5, 0.0], &[4])),
            1e-5,
        )
        .to_vec_f64();
    let (mean, var) = (3.0, (4.0 + 1.0 + 0.0 + 9.0) / 4.0);
    let r = 1.0 / f64::sqrt(var + 1e-5);
    let want = [
        (1.0 - mean) * r,
        2.0 * (2.0 - mean) * r,
        0.5,
        (6.0 - mean) * r,
    ];
    assert_close64("layer_norm", &y, &want, 1e-12);
}

#[test]
fn grad_batch_norm_training() {
    let x = leaf64(normal(&[5, 3], 1), &[5, 3]);
    let w = leaf64(uniform(&[3], 0.5, 1.5, 2), &[3]);
    let b = leaf64(normal(&[3], 3), &[3]);
    gradcheck(
        "batch_norm train (N,C) affine",
        &[x.clone(), w.clone(), b.clone()],
        |t| t[0].batch_norm(None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5),
    );
    gradcheck("batch_norm train (N,C) plain", &[x], |t| {
        t[0].batch_norm(None, None, None, None, true, 0.1, 1e-5)
    });
    let x3 = leaf64(normal(&[4, 3, 7], 4), &[4, 3, 7]);
    gradcheck(
        "batch_norm train (N,C,L) affine",
        &[x3.clone(), w, b],
        |t| t[0].batch_norm(None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5),
    );
    // Running statistics are updated as a side effect and do not change the gradient.
    let (rm, rv) = (const64(vec![0.0; 3], &[3]), const64(vec![1.0; 3], &[3]));
    gradcheck("batch_norm train (N,C,L) with running stats", &[x3], |t| {
        t[0].batch_norm(Some(&rm), Some(&rv), None, None, true, 0.1, 1e-5)
    });
    assert!(
        !rm.requires_grad() && !rv.requires_grad(),
        "running statistics must not require grad"
    );
}

/// Per-channel (mean, biased variance) of an (N, C, L) buffer.
fn channel_stats(x: &[f64], n: usize, c: usize, l: usize) -> Vec<(f64, f64)> {
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| (0..l).map(move |j| (i, j)))
                .map(|(i, j)| x[(i * c + ch) * l + j])
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
            (m, v)
        })
        .collect()
}

#[test]
fn batch_norm_running_stats_follow_pytorch() {
    let (n, c, l) = (4usize, 3usize, 7usize);
    let data: Vec<f64> = normal(&[n, c, l], 5)
        .into_iter()
        .enumerate()
        .map(|(i, v)| v * 2.0 + (i % 3) as f64)
        .collect();
    let x = const64(data.clone(), &[n, c, l]);
    let rm0 = vec![0.1, -0.2, 0.3];
    let rv0 = vec![1.0, 2.0, 0.5];
    let (rm, rv) = (const64(rm0.clone(), &[3]), const64(rv0.clone(), &[3]));
    let (momentum, eps) = (0.1, 1e-5);
    let y = x
        .batch_norm(Some(&rm), Some(&rv), None, None, true, momentum, eps)
        .to_vec_f64();
    let stats = channel_stats(&data, n, c, l);
    let count = (n * l) as f64;
    // PyTorch: running = (1 - momentum)·running + momentum·batch, with the *unbiased* variance.
    let want_rm: Vec<f64> = (0..c)
        .map(|ch| (1.0 - momentum) * rm0[ch] + momentum * stats[ch].0)
        .collect();
    let want_rv: Vec<f64> = (0..c)
        .map(|ch| (1.0 - momentum) * rv0[ch] + momentum * stats[ch].1 * count / (count - 1.0))
        .collect();
    assert_close64("running_mean", &rm.to_vec_f64(), &want_rm, 1e-12);
    assert_close64("running_var", &rv.to_vec_f64(), &want_rv, 1e-12);
    // ...while the output is normalised with the *biased* batch variance.
    let want_y: Vec<f64> = (0..n * c * l)
        .map(|i| {
            let (m, v) = stats[(i / l) % c];
            (data[i] - m) / (v + eps).sqrt()
        })
        .collect();
    assert_close64("batch_norm training output", &y, &want_y, 1e-12);
    // A second step compounds.
    let _ = x.batch_norm(Some(&rm), Some(&rv), None, None, true, momentum, eps);
    let want_rm2: Vec<f64> = (0..c)
        .map(|ch| (1.0 - momentum) * want_rm[ch] + momentum * stats[ch].0)
        .collect();
    assert_close64(
        "running_mean after two steps",
        &rm.to_vec_f64(),
        &want_rm2,
        1e-12,
    );
}

#[test]
fn batch_norm_eval_mode() {
    let (n, c, l) = (3usize, 3usize, 5usize);
    let data = normal(&[n, c, l], 6);
    let rm0 = vec![0.1, -0.2, 0.3];
    let rv0 = vec![1.0, 2.0, 0.5];
    let (wv, bv) = (vec![1.5, 0.5, -1.0], vec![0.0, 1.0, 2.0]);
    let (rm, rv) = (const64(rm0.clone(), &[3]), const64(rv0.clone(), &[3]));
    let eps = 1e-5;
    let y = const64(data.clone(), &[n, c, l])
        .batch_norm(
            Some(&rm),
            Some(&rv),
            Some(&const64(wv.clone(), &[3])),
            Some(&const64(bv.clone(), &[3])),
            false,
            0.1,
            eps,
        )
        .to_vec_f64();
    let want: Vec<f64> = (0..n * c * l)
        .map(|i| {
            let ch = (i / l) % c;
            (data[i] - rm0[ch]) / (rv0[ch] + eps).sqrt() * wv[ch] + bv[ch]
        })
        .collect();
    assert_close64("batch_norm eval output", &y, &want, 1e-12);
    assert_close64(
        "running_mean unchanged in eval",
        &rm.to_vec_f64(),
        &rm0,
        0.0,
    );
    assert_close64("running_var unchanged in eval", &rv.to_vec_f64(), &rv0, 0.0);
    let x = leaf64(data, &[n, c, l]);
    let (w, b) = (leaf64(wv, &[3]), leaf64(bv, &[3]));
    gradcheck("batch_norm eval affine", &[x, w, b], |t| {
        t[0].batch_norm(
            Some(&rm),
            Some(&rv),
            Some(&t[1]),
            Some(&t[2]),
            false,
            0.1,
            eps,
        )
    });
}

#[test]
fn grad_normalize_cosine_similarity() {
    let a = leaf64(normal(&[3, 7], 1), &[3, 7]);
    let b = leaf64(normal(&[3, 7], 2), &[3, 7]);
    gradcheck("normalize axis 1", [a.clone()], |t| {
        t[0].normalize(1, 1e-12)
    });
    gradcheck("normalize axis 0", [a.clone()], |t| {
        t[0].normalize(0, 1e-12)
    });
    gradcheck("cosine_similarity axis 1", &[a.clone(), b.clone()], |t| {
        t[0].cosine_similarity(&t[1], 1, 1e-8)
    });
    gradcheck("cosine_similarity axis 0", &[a.clone(), b], |t| {
        t[0].cosine_similarity(&t[1], 0, 1e-8)
    });
    let row = leaf64(normal(&[7], 3), &[7]);
    gradcheck("cosine_similarity broadcast", &[a, row], |t| {
        t[0].cosine_similarity(&t[1], -1, 1e-8)
    });
}

#[test]
fn normalize_cosine_values() {
    let y = const64(vec![3.0, 4.0, 0.0, 0.0], &[2, 2])
        .normalize(1, 1e-12)
        .to_vec_f64();
    assert_close64(
        "normalize (zero row stays zero)",
        &y,
        &[0.6, 0.8, 0.0, 0.0],
        1e-15,
    );
    let c = const64(vec![1.0, 0.0, 1.0, 1.0], &[2, 2])
        .cosine_similarity(&const64(vec![0.0, 2.0, 2.0, 2.0], &[2, 2]), 1, 1e-8)
        .to_vec_f64();
    assert_close64("cosine_similarity", &c, &[0.0, 1.0], 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------------------------

#[test]
fn dropout_gradient_is_mask_over_keep() {
    let p = 0.3;
    let x = leaf64(normal(&[7, 33], 1), &[7, 33]);
    let y = x.dropout(p, 42, true);
    y.sum_all().backward();
    let g = x.grad().unwrap().to_vec_f64();
    let (xv, yv) = (x.to_vec_f64(), y.to_vec_f64());
    let keep = 1.0 / (1.0 - p);
    for i in 0..g.len() {
        assert!(
            g[i] == 0.0 || (g[i] - keep).abs() < 1e-12,
            "dropout gradient {} at {i} is neither 0 nor 1/(1-p)",
            g[i]
        );
        assert!(
            (yv[i] - xv[i] * g[i]).abs() < 1e-12,
            "dropout output at {i} is not x·mask/(1-p)"
        );
    }
    assert!(
        g.contains(&0.0) && g.contains(&keep),
        "the mask should both drop and keep some of 231 elements"
    );
    gradcheck("dropout fixed seed", &[x], |t| t[0].dropout(p, 42, true));
}

#[test]
fn dropout_seed_determines_mask() {
    let x = const64(vec![1.0; 1000], &[1000]);
    let a = x.dropout(0.5, 7, true).to_vec_f64();
    let b = x.dropout(0.5, 7, true).to_vec_f64();
    let c = x.dropout(0.5, 8, true).to_vec_f64();
    assert_eq!(a, b, "the same seed must give the same mask");
    assert_ne!(a, c, "different seeds should give different masks");
    // f32 tensors with the same seed get the same mask.
    let a32 = Tensor::ones(&[1000], &Device::cpu())
        .dropout(0.5, 7, true)
        .to_vec_f64();
    assert_close64("dropout mask f32 vs f64", &a32, &a, 1e-6);
}

#[test]
fn dropout_identity_cases_and_keep_fraction() {
    let x = leaf64(normal(&[3, 7], 1), &[3, 7]);
    assert_eq!(
        x.dropout(0.0, 1, true).to_vec_f64(),
        x.to_vec_f64(),
        "p = 0 is the identity"
    );
    assert_eq!(
        x.dropout(0.9, 1, false).to_vec_f64(),
        x.to_vec_f64(),
        "evaluation mode is the identity"
    );
    gradcheck("dropout p=0", [x.clone()], |t| t[0].dropout(0.0, 3, true));
    gradcheck("dropout eval", &[x], |t| t[0].dropout(0.5, 3, false));
    for p in [0.1, 0.5, 0.8] {
        let n = 20_000;
        let y = const64(vec![1.0; n], &[n])
            .dropout(p, 99, true)
            .to_vec_f64();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // Binomial standard deviation is at most 0.0036 at n = 20000; allow about 5σ.
        assert!(
            (kept - (1.0 - p)).abs() < 0.02,
            "dropout p={p} kept {kept}, expected about {}",
            1.0 - p
        );
        let mean = y.iter().sum::<f64>() / n as f64;
        assert!(
            (mean - 1.0).abs() < 0.05 / (1.0 - p),
            "dropout p={p} should preserve the mean, got {mean}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_cross_entropy() {
    let logits = leaf64(
        normal(&[5, 7], 1).into_iter().map(|v| 2.0 * v).collect(),
        &[5, 7],
    );
    let targets = [3i64, -100, 0, 6, 3];
    gradcheck("cross_entropy", [logits.clone()], |t| {
        t[0].cross_entropy(&targets, -100, 0.0)
    });
    gradcheck("cross_entropy label_smoothing 0.1", [logits.clone()], |t| {
        t[0].cross_entropy(&targets, -100, 0.1)
    });
    gradcheck("cross_entropy ignore_index 3", [logits.clone()], |t| {
        t[0].cross_entropy(&[3, 1, 0, 6, 3], 3, 0.25)
    });
    gradcheck("cross_entropy all smoothing", &[logits], |t| {
        t[0].cross_entropy(&[0, 1, 2, 3, 4], -1, 1.0)
    });
}

#[test]
fn cross_entropy_value_by_hand() {
    let logits = const64(vec![1.0, 2.0, 3.0, 0.5, -1.0, 2.0, 0.0, 0.0, 0.0], &[3, 3]);
    // Row 0: logsumexp(1,2,3) = 3.40760596…; ℓ = 0.9·0.40760596 + 0.1·mean(2.40760596, 1.40760596,
    // 0.40760596); row 1 ignored; row 2: ln 3. Mean over the two valid rows.
    let lse = 3.0 + (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln();
    let row0 = 0.9 * (lse - 3.0) + 0.1 * ((lse - 1.0) + (lse - 2.0) + (lse - 3.0)) / 3.0;
    let want = (row0 + 3.0f64.ln()) / 2.0;
    assert!((want - 0.803_109_126_556_245_2).abs() < 1e-12);
    let got = logits.cross_entropy(&[2, -100, 0], -100, 0.1).to_vec_f64();
    assert_eq!(got.len(), 1);
    assert!(
        (got[0] - want).abs() < 1e-12,
        "cross_entropy = {}, expected {want}",
        got[0]
    );
    // Without smoothing or ignored rows: plain mean negative log-likelihood.
    let got = logits.cross_entropy(&[2, 1, 0], -100, 0.0).to_vec_f64()[0];
    assert!(
        (got - 1.582_509_849_923_216).abs() < 1e-12,
        "cross_entropy = {got}, expected 1.5825098499"
    );
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

fn attn_inputs(sq: &[usize], sk: &[usize], sv: &[usize], seed: u64) -> [Tensor; 3] {
    [
        leaf64(normal(sq, seed), sq),
        leaf64(normal(sk, seed + 1), sk),
        leaf64(normal(sv, seed + 2), sv),
    ]
}

#[test]
fn grad_attention_rank3() {
    let qkv = attn_inputs(&[2, 5, 4], &[2, 7, 4], &[2, 7, 3], 1);
    gradcheck("attention rank 3 Tq≠Tk", &qkv, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, None, None)
    });
    gradcheck("attention rank 3 causal", &qkv, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, None, None)
    });
    let mask = const64(
        vec![0., 0., 1., 0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 1.],
        &[2, 7],
    );
    let mut inputs = qkv.to_vec();
    inputs.push(mask);
    gradcheck("attention rank 3 key padding", &inputs, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, Some(&t[3]), None)
    });
    gradcheck(
        "attention rank 3 causal + key padding + scale",
        &inputs,
        |t| Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, Some(&t[3]), Some(0.3)),
    );
}

#[test]
fn grad_attention_rank4() {
    let qkv = attn_inputs(&[2, 3, 5, 4], &[2, 3, 6, 4], &[2, 3, 6, 5], 4);
    gradcheck("attention rank 4 Tq≠Tk", &qkv, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, None, None)
    });
    gradcheck("attention rank 4 causal", &qkv, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, None, None)
    });
    let mask = const64(
        vec![0., 1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0.],
        &[2, 6],
    );
    let mut inputs = qkv.to_vec();
    inputs.push(mask);
    gradcheck("attention rank 4 key padding", &inputs, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], false, Some(&t[3]), None)
    });
    let sq = leaf64(normal(&[1, 2, 7, 3], 8), &[1, 2, 7, 3]);
    let sk = leaf64(normal(&[1, 2, 7, 3], 9), &[1, 2, 7, 3]);
    let sv = leaf64(normal(&[1, 2, 7, 3], 10), &[1, 2, 7, 3]);
    gradcheck("attention rank 4 square causal", &[sq, sk, sv], |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, None, None)
    });
}

#[test]
fn attention_fully_masked_query_gives_zero() {
    // Key 0 of batch 1 is padded; with the causal mask its query 0 can see no key at all.
    let qkv = attn_inputs(&[2, 4, 3], &[2, 4, 3], &[2, 4, 2], 11);
    let mask = const64(vec![0., 0., 0., 1., 1., 0., 0., 0.], &[2, 4]);
    let o =
        Tensor::scaled_dot_product_attention(&qkv[0], &qkv[1], &qkv[2], true, Some(&mask), None);
    let ov = o.to_vec_f64();
    assert!(
        ov.iter().all(|v| v.is_finite()),
        "attention output has non-finite values: {ov:?}"
    );
    assert_eq!(
        &ov[8..10],
        &[0.0, 0.0],
        "a query that sees no key must give a zero output"
    );
    let mut inputs = qkv.to_vec();
    inputs.push(mask);
    gradcheck("attention with a fully masked query", &inputs, |t| {
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, Some(&t[3]), None)
    });
}

#[test]
fn grad_multi_head_attention() {
    let qkv = leaf64(normal(&[2, 5, 3 * 6], 40), &[2, 5, 3 * 6]);
    let mask = const64(vec![0., 1., 0., 0., 0., 1., 0., 0., 0., 0.], &[2, 5]);
    for causal in [false, true] {
        gradcheck(
            &format!("multi_head_attention causal={causal}"),
            std::slice::from_ref(&qkv),
            |t| Tensor::multi_head_attention(&t[0], 3, causal, None),
        );
    }
    gradcheck(
        "multi_head_attention causal + key padding",
        &[qkv, mask],
        |t| Tensor::multi_head_attention(&t[0], 3, true, Some(&t[1])),
    );
}

/// Cross-attention (a decoder's queries over an encoder's memory of another length), through
/// its input, its memory and every projection weight, with memory padding hidden.
#[test]
fn grad_cross_attention() {
    use selfsup_engine::nn::{CrossAttention, Linear};
    let (b, tq, tk, c) = (2, 3, 5, 6);
    let x = leaf64(normal(&[b, tq, c], 60), &[b, tq, c]);
    let memory = leaf64(normal(&[b, tk, c], 61), &[b, tk, c]);
    let w = |rows: usize, seed: u64| leaf64(normal(&[rows, c], seed), &[rows, c]);
    let bias = |rows: usize, seed: u64| leaf64(normal(&[rows], seed), &[rows]);
    let mask = const64(vec![0., 0., 0., 1., 1., 0., 0., 0., 0., 0.], &[b, tk]);
    let inputs = [
        x,
        memory,
        w(c, 62),
        bias(c, 63),
        w(2 * c, 64),
        bias(2 * c, 65),
        w(c, 66),
        bias(c, 67),
        mask,
    ];
    gradcheck("cross_attention", &inputs, |t| {
        let layer = CrossAttention {
            q: Linear::from_tensors(t[2].clone(), Some(t[3].clone())),
            kv: Linear::from_tensors(t[4].clone(), Some(t[5].clone())),
            proj: Linear::from_tensors(t[6].clone(), Some(t[7].clone())),
            heads: 2,
        };
        layer.forward(&t[0], &t[1], Some(&t[8]))
    });
}

/// The packed op equals splitting the projection into heads, attending, and merging the heads.
#[test]
fn multi_head_attention_matches_split_heads() {
    let (b, t, heads, d) = (2, 6, 3, 4);
    let qkv = leaf64(normal(&[b, t, 3 * heads * d], 41), &[b, t, 3 * heads * d]);
    let mask = const64(
        vec![0., 0., 1., 0., 0., 0., 1., 0., 0., 0., 0., 1.],
        &[b, t],
    );
    for causal in [false, true] {
        for m in [None, Some(&mask)] {
            let name = format!("multi_head_attention causal={causal} mask={}", m.is_some());
            let got = Tensor::multi_head_attention(&qkv, heads, causal, m);
            let x = qkv.reshape_to(&[b, t, 3, heads, d]);
            let head = |i: usize| {
                x.narrow(2, i, 1)
                    .reshape_to(&[b, t, heads, d])
                    .permute(&[0, 2, 1, 3])
            };
            let want = reference_attention(&head(0), &head(1), &head(2), causal, m, 0.5)
                .permute(&[0, 2, 1, 3])
                .reshape_to(&[b, t, heads * d]);
            assert_close64(&name, &got.to_vec_f64(), &want.to_vec_f64(), 1e-12);
            let w = const64(normal(&[b, t, heads * d], 42), &[b, t, heads * d]);
            let grad = |y: &Tensor| {
                qkv.zero_grad();
                (y * &w).sum_all().backward();
                qkv.grad().expect("qkv has a gradient").to_vec_f64()
            };
            let (g_got, g_want) = (grad(&got), grad(&want));
            assert_close64(&format!("{name} gradient"), &g_got, &g_want, 1e-12);
        }
    }
}

/// softmax(q kᵀ · scale + bias) v composed from the basic ops, in f64.
fn reference_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    mask: Option<&Tensor>,
    scale: f64,
) -> Tensor {
    let r = q.rank();
    let (tq, tk) = (q.shape()[r - 2], k.shape()[r - 2]);
    let mut s = q.matmul_nt(k).mul_scalar(scale);
    if let Some(m) = mask {
        let mut shape = vec![m.shape()[0], 1, tk];
        if r == 4 {
            shape.insert(1, 1);
        }
        s = s.masked_fill(&m.reshape_to(&shape), f64::NEG_INFINITY);
    }
    if causal {
        let c: Vec<f64> = (0..tq * tk)
            .map(|i| if i % tk > i / tk { 1.0 } else { 0.0 })
            .collect();
        s = s.masked_fill(&const64(c, &[tq, tk]), f64::NEG_INFINITY);
    }
    s.softmax(-1).matmul(v)
}

#[test]
fn attention_matches_composed_reference() {
    // D = 4 makes 1/√D exact in any precision, so this isolates the kernel itself.
    let [q, k, v] = attn_inputs(&[2, 3, 5, 4], &[2, 3, 6, 4], &[2, 3, 6, 5], 20);
    let mask = const64(
        vec![0., 1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0.],
        &[2, 6],
    );
    for causal in [false, true] {
        for m in [None, Some(&mask)] {
            let got =
                Tensor::scaled_dot_product_attention(&q, &k, &v, causal, m, None).to_vec_f64();
            let want = reference_attention(&q, &k, &v, causal, m, 0.5).to_vec_f64();
            assert_close64(
                &format!("attention causal={causal} mask={}", m.is_some()),
                &got,
                &want,
                1e-12,
            );
        }
    }
}

/// f64 attention uses the exact f64 scale in its forward pass (not 1/√D rounded to f32), so it
/// matches an f64 reference to 1e-12 and agrees with its own backward pass.
#[test]
fn attention_f64_uses_the_exact_scale() {
    let [q, k, v] = attn_inputs(&[2, 3, 5], &[2, 6, 5], &[2, 6, 3], 30);
    let got = Tensor::scaled_dot_product_attention(&q, &k, &v, false, None, None).to_vec_f64();
    let want = reference_attention(&q, &k, &v, false, None, 1.0 / 5f64.sqrt()).to_vec_f64();
    assert_close64(
        "f64 attention with D = 5 against the f64 reference",
        &got,
        &want,
        1e-12,
    );
    let got = Tensor::scaled_dot_product_attention(&q, &k, &v, false, None, Some(0.1)).to_vec_f64();
    let want = reference_attention(&q, &k, &v, false, None, 0.1).to_vec_f64();
    assert_close64(
        "f64 attention with scale 0.1 against the f64 reference",
        &got,
        &want,
        1e-12,
    );
}

// ---------------------------------------------------------------------------------------------
// Gathers and shape ops
// ---------------------------------------------------------------------------------------------

#[test]
fn grad_embedding_index_select() {
    let w = leaf64(normal(&[5, 4], 1), &[5, 4]);
    let ids = [1u32, 3, 1, 0, 1, 1];
    gradcheck("embedding repeated ids", [w.clone()], |t| {
        embedding(&t[0], &ids)
    });
    let x = leaf64(normal(&[3, 7, 2], 2), &[3, 7, 2]);
    gradcheck("index_select axis 1", [x.clone()], |t| {
        t[0].index_select(1, &[6, 0, 6, 2])
    });
    gradcheck("index_select axis -1", [x.clone()], |t| {
        t[0].index_select(-1, &[1, 1, 0])
    });
    gradcheck("index_select axis 0 empty", &[x], |t| {
        t[0].index_select(0, &[]).sum_all().add_scalar(0.0)
    });
    // Values: rows picked in order, repeats included.
    let e = embedding(&w, &ids).to_vec_f64();
    let wv = w.to_vec_f64();
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| wv[i as usize * 4..i as usize * 4 + 4].to_vec())
        .collect();
    assert_eq!(e, want);
    // Repeated indices accumulate: row 1 appears four times.
    let w2 = leaf64(vec![0.0; 20], &[5, 4]);
    embedding(&w2, &ids).sum_all().backward();
    assert_eq!(
        w2.grad().unwrap().to_vec_f64()[4..12],
        [4.0, 4.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn grad_reshape_flatten_squeeze() {
    let x = leaf64(normal(&[3, 7, 2], 1), &[3, 7, 2]);
    gradcheck("reshape (7,-1)", [x.clone()], |t| {
        t[0].reshape(&[7, -1]).mul_scalar(2.0)
    });
    gradcheck("view (42)", [x.clone()], |t| t[0].view(&[42]).square());
    gradcheck("reshape_to (2,21)", [x.clone()], |t| {
        t[0].reshape_to(&[2, 21]).exp()
    });
    gradcheck("flatten 1", [x.clone()], |t| t[0].flatten(1).square());
    gradcheck("flatten 0", [x.clone()], |t| t[0].flatten(0).square());
    gradcheck("unsqueeze 1", [x.clone()], |t| t[0].unsqueeze(1).square());
    gradcheck("unsqueeze -1", [x.clone()], |t| t[0].unsqueeze(-1).square());
    gradcheck(
        "squeeze",
        &[leaf64(normal(&[3, 1, 7], 2), &[3, 1, 7])],
        |t| t[0].squeeze(1).square(),
    );
    assert_eq!(x.unsqueeze(3).shape(), [3, 7, 2, 1]);
    assert_eq!(x.unsqueeze(-1).shape(), [3, 7, 2, 1]);
    assert_eq!(x.unsqueeze(0).shape(), [1, 3, 7, 2]);
    assert_eq!(x.flatten(1).shape(), [3, 14]);
    assert_eq!(x.reshape(&[-1]).shape(), [42]);
}

#[test]
fn grad_permute_transpose() {
    let x = leaf64(normal(&[3, 7, 5], 1), &[3, 7, 5]);
    gradcheck("permute [2,0,1]", [x.clone()], |t| {
        t[0].permute(&[2, 0, 1]).square()
    });
    gradcheck("permute [1,2,0]", [x.clone()], |t| {
        t[0].permute(&[1, 2, 0]).square()
    });
    gradcheck("transpose 0 2", [x.clone()], |t| {
        t[0].transpose(0, 2).square()
    });
    gradcheck("transpose -1 -2", [x.clone()], |t| {
        t[0].transpose(-1, -2).square()
    });
    gradcheck("t", [x.clone()], |t| t[0].t().square());
    let v = x.permute(&[2, 0, 1]).to_vec_f64();
    let xv = x.to_vec_f64();
    assert_eq!(
        v[(4 * 3 + 2) * 7 + 6],
        xv[(2 * 7 + 6) * 5 + 4],
        "permute moves element (2,6,4) to (4,2,6)"
    );
}

#[test]
fn grad_narrow() {
    let x = leaf64(normal(&[3, 7, 5], 1), &[3, 7, 5]);
    gradcheck("narrow middle", [x.clone()], |t| {
        t[0].narrow(1, 2, 3).square()
    });
    gradcheck("narrow start", [x.clone()], |t| {
        t[0].narrow(0, 0, 1).square()
    });
    gradcheck("narrow end", [x.clone()], |t| {
        t[0].narrow(-1, 4, 1).square()
    });
    gradcheck("narrow empty", [x.clone()], |t| {
        t[0].narrow(1, 3, 0).sum_all().add_scalar(1.0)
    });
    gradcheck("narrow all", &[x], |t| t[0].narrow(2, 0, 5).square());
}

#[test]
fn grad_expand() {
    let x = leaf64(normal(&[3, 1], 1), &[3, 1]);
    gradcheck("expand (3,1)->(2,3,7)", [x.clone()], |t| {
        t[0].expand(&[2, 3, 7])
    });
    gradcheck("expand same", &[x], |t| t[0].expand(&[3, 1]).square());
    let s = leaf64(vec![0.7], &[]);
    gradcheck("expand scalar", &[s], |t| t[0].expand(&[5, 3]));
}

#[test]
fn grad_resize_bicubic() {
    // DINO's cases: a 7×7 position grid to a 3×3 local crop's and up to 12×12; and a
    // non-square one, to catch swapped axes.
    let x = leaf64(normal(&[2, 3, 7, 7], 1), &[2, 3, 7, 7]);
    gradcheck("resize_bicubic 7×7→3×3", [x.clone()], |t| {
        t[0].resize_bicubic(3, 3)
    });
    gradcheck("resize_bicubic 7×7→12×12", [x], |t| {
        t[0].resize_bicubic(12, 12)
    });
    let y = leaf64(normal(&[4, 5], 2), &[4, 5]);
    gradcheck("resize_bicubic 4×5→6×3", [y], |t| {
        t[0].resize_bicubic(6, 3)
    });
}

#[test]
fn grad_cat_stack() {
    let a = leaf64(normal(&[3, 2, 5], 1), &[3, 2, 5]);
    let b = leaf64(normal(&[3, 7, 5], 2), &[3, 7, 5]);
    let c = leaf64(normal(&[3, 1, 5], 3), &[3, 1, 5]);
    gradcheck("cat axis 1", &[a.clone(), b, c], |t| {
        Tensor::cat(&[&t[0], &t[1], &t[2]], 1).square()
    });
    let d = leaf64(normal(&[1, 2, 5], 4), &[1, 2, 5]);
    gradcheck("cat axis 0", &[a.clone(), d], |t| {
        Tensor::cat(&[&t[0], &t[1]], 0).square()
    });
    gradcheck("cat the same tensor twice", [a.clone()], |t| {
        Tensor::cat(&[&t[0], &t[0]], -1).square()
    });
    let e = leaf64(normal(&[3, 2, 5], 5), &[3, 2, 5]);
    for ax in [0isize, 1, 3, -1] {
        gradcheck(&format!("stack axis {ax}"), &[a.clone(), e.clone()], |t| {
            Tensor::stack(&[&t[0], &t[1]], ax).square()
        });
    }
    assert_eq!(Tensor::stack(&[&a, &e, &a], 1).shape(), [3, 3, 2, 5]);
    assert_eq!(Tensor::stack(&[&a, &e], -1).shape(), [3, 2, 5, 2]);
}

#[test]
fn grad_to_dtype() {
    // f64 → f64 is the identity and keeps the graph.
    let x = leaf64(normal(&[3, 7], 1), &[3, 7]);
    gradcheck("to_dtype F64 (same)", [x.clone()], |t| {
        t[0].to_dtype(DType::F64).square()
    });
    // f64 → f32 → f64: the gradient comes back to the f64 leaf as f64 (finite differences are
    // meaningless through an f32 rounding, so the gradient is checked exactly).
    let y = x.to_dtype(DType::F32);
    assert_eq!(y.dtype(), DType::F32);
    assert!(y.requires_grad());
    let w = Tensor::from_vec(
        (0..21).map(|i| i as f32 - 10.0).collect(),
        &[3, 7],
        &Device::cpu(),
    );
    (&y * &w).sum_all().backward();
    let g = x.grad().unwrap();
    assert_eq!(
        g.dtype(),
        DType::F64,
        "the gradient of an f64 leaf must be f64"
    );
    assert_eq!(
        g.to_vec_f64(),
        (0..21).map(|i| i as f64 - 10.0).collect::<Vec<_>>()
    );
    // f32 leaf → f64 computation → f32 gradient.
    let x32 = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3], &Device::cpu()).requires_grad_(true);
    x32.to_dtype(DType::F64).square().sum_all().backward();
    let g32 = x32.grad().unwrap();
    assert_eq!(g32.dtype(), DType::F32);
    assert_eq!(g32.to_vec(), vec![1.0, -2.0, 4.0]);
}

// ---------------------------------------------------------------------------------------------
// Forward values against hand-computed results
// ---------------------------------------------------------------------------------------------

#[test]
fn softmax_known_rows() {
    let y = const64(vec![1.0, 2.0, 3.0], &[1, 3])
        .softmax(-1)
        .to_vec_f64();
    assert_close64(
        "softmax [1,2,3]",
        &y,
        &[
            0.090_030_573_170_380_46,
            0.244_728_471_054_797_64,
            0.665_240_955_774_821_8,
        ],
        1e-15,
    );
    // Shift invariance at large magnitudes (a naive exp would overflow).
    let y = const64(vec![1001.0, 1002.0, 1003.0], &[3])
        .softmax(0)
        .to_vec_f64();
    assert_close64(
        "softmax [1001,1002,1003]",
        &y,
        &[
            0.090_030_573_170_380_46,
            0.244_728_471_054_797_64,
            0.665_240_955_774_821_8,
        ],
        1e-15,
    );
    let l = const64(vec![-1.0, 0.0, 3.0, 0.5], &[4])
        .log_softmax(0)
        .to_vec_f64();
    let want: Vec<f64> = [
        0.015_924_043_349_701_003,
        0.043_286_037_673_086_35,
        0.869_423_307_941_268_2,
        0.071_366_611_035_944_55,
    ]
    .iter()
    .map(|p: &f64| p.ln())
    .collect();
    assert_close64("log_softmax", &l, &want, 1e-14);
    // Middle axis: each column of a (1, 3, 2) tensor sums to one.
    let m = const64(vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0], &[1, 3, 2])
        .softmax(1)
        .to_vec_f64();
    assert_close64(
        "softmax axis 1",
        &m,
        &[
            0.090_030_573_170_380_46,
            1.0 / 3.0,
            0.244_728_471_054_797_64,
            1.0 / 3.0,
            0.665_240_955_774_821_8,
            1.0 / 3.0,
        ],
        1e-15,
    );
    // -inf entries get probability zero.
    let z = const64(vec![0.0, f64::NEG_INFINITY, 0.0], &[3])
        .softmax(0)
        .to_vec_f64();
    assert_close64("softmax with -inf", &z, &[0.5, 0.0, 0.5], 1e-15);
}

#[test]
fn reduction_values() {
    let x = const64(vec![1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0], &[2, 4]);
    assert_close64(
        "var correction 1",
        &x.var(1, false, 1).to_vec_f64(),
        &[5.0 / 3.0, 500.0 / 3.0],
        1e-12,
    );
    assert_close64(
        "var correction 0",
        &x.var(1, false, 0).to_vec_f64(),
        &[1.25, 125.0],
        1e-12,
    );
    assert_close64(
        "var axis 0",
        &x.var(0, true, 1).to_vec_f64(),
        &[40.5, 162.0, 364.5, 648.0],
        1e-12,
    );
    assert_eq!(x.var(0, true, 1).shape(), [1, 4]);
    assert_close64(
        "sum axis 1",
        &x.sum(1, false).to_vec_f64(),
        &[10.0, 100.0],
        0.0,
    );
    assert_close64(
        "mean axis 0",
        &x.mean(0, false).to_vec_f64(),
        &[5.5, 11.0, 16.5, 22.0],
        1e-14,
    );
    assert_close64("sum_all", &x.sum_all().to_vec_f64(), &[110.0], 0.0);
    assert_eq!(x.sum_all().shape(), [] as [usize; 0]);
    assert_close64("mean_all", &x.mean_all().to_vec_f64(), &[13.75], 1e-14);
    assert_close64(
        "max axis 1",
        &x.max(1, false).to_vec_f64(),
        &[4.0, 40.0],
        0.0,
    );
    assert_close64(
        "min axis 0",
        &x.min(0, false).to_vec_f64(),
        &[1.0, 2.0, 3.0, 4.0],
        0.0,
    );
    assert_eq!(x.sum_axes(&[0, 1], true).shape(), [1, 1]);
}

#[test]
fn argmax_argmin_values() {
    let x = const64(vec![3.0, 7.0, 7.0, -1.0, 0.0, -5.0, 2.0, -5.0], &[2, 4]);
    assert_eq!(
        x.argmax(1, false).to_vec_f64(),
        [1.0, 2.0],
        "first maximum wins ties"
    );
    assert_eq!(
        x.argmin(1, false).to_vec_f64(),
        [3.0, 1.0],
        "first minimum wins ties"
    );
    assert_eq!(x.argmax(0, true).to_vec_f64(), [0.0, 0.0, 0.0, 0.0]);
    assert_eq!(x.argmax(0, true).shape(), [1, 4]);
    assert_eq!(x.argmin(-2, false).to_vec_f64(), [1.0, 1.0, 1.0, 1.0]);
    assert!(
        !leaf64(vec![1.0, 2.0], &[2])
            .argmax(0, false)
            .requires_grad(),
        "argmax is not differentiable"
    );
}

#[test]
fn comparison_values() {
    let a = const64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = const64(vec![2.0, 2.0, 5.0], &[3]);
    assert_eq!(a.eq_(&b).to_vec_f64(), [0., 1., 0., 0., 0., 0.]);
    assert_eq!(a.ne_(&b).to_vec_f64(), [1., 0., 1., 1., 1., 1.]);
    assert_eq!(a.lt(&b).to_vec_f64(), [1., 0., 1., 0., 0., 0.]);
    assert_eq!(a.le(&b).to_vec_f64(), [1., 1., 1., 0., 0., 0.]);
    assert_eq!(a.gt(&b).to_vec_f64(), [0., 0., 0., 1., 1., 1.]);
    assert_eq!(a.ge(&b).to_vec_f64(), [0., 1., 0., 1., 1., 1.]);
    assert_eq!(a.gt(&b).shape(), [2, 3]);
    let g = leaf64(vec![1.0, 2.0], &[2]);
    assert!(
        !g.lt(&g).requires_grad(),
        "comparisons are not differentiable"
    );
}

#[test]
fn creation_values() {
    let cpu = Device::cpu();
    assert_eq!(Tensor::arange(5, &cpu).to_vec(), [0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(Tensor::arange(0, &cpu).shape(), [0]);
    assert_eq!(Tensor::full(&[2, 2], 1.5, &cpu).to_vec(), [1.5; 4]);
    assert_eq!(Tensor::zeros(&[3], &cpu).to_vec(), [0.0; 3]);
    assert_eq!(Tensor::ones(&[2], &cpu).to_vec(), [1.0; 2]);
    assert_eq!(Tensor::scalar(2.5, &cpu).item(), 2.5);
    assert_eq!(Tensor::scalar(2.5, &cpu).shape(), [] as [usize; 0]);
    assert_eq!(
        Tensor::rand(&[4], 3, &cpu).to_vec(),
        Tensor::rand(&[4], 3, &cpu).to_vec()
    );
    assert!(Tensor::rand(&[100], 3, &cpu)
        .to_vec()
        .iter()
        .all(|v| (0.0..1.0).contains(v)));
    let n = Tensor::randn(&[10_000], 4, &cpu);
    let (m, v) = (n.mean_all().item(), n.var_axes(&[], false, 1).item());
    assert!(
        m.abs() < 0.05 && (v - 1.0).abs() < 0.05,
        "randn: mean {m}, var {v}"
    );
    let x64 = const64(vec![1.0, 2.0], &[2]);
    assert_eq!(x64.zeros_like().dtype(), DType::F64);
    assert_eq!(x64.full_like(0.25).to_vec_f64(), [0.25, 0.25]);
    assert_eq!(x64.new_from(&[1.0, 2.0, 3.0], &[3]).dtype(), DType::F64);
}

#[test]
fn unary_values_at_known_points() {
    let pts = vec![-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0];
    let x = const64(pts.clone(), &[7]);
    let gelu = [
        -0.004_049_694_094_890_31,
        -0.158_655_253_931_457_07,
        -0.154_268_769_362_993_44,
        0.0,
        0.345_731_230_637_006_56,
        0.841_344_746_068_542_9,
        1.954_499_736_103_641_6,
    ];
    assert_close64("gelu (erf)", &x.gelu().to_vec_f64(), &gelu, 1e-12);
    let gelu_tanh = [
        -0.003_637_392_081_772_994_3,
        -0.158_808_009_391_723_24,
        -0.154_285_990_174_856_06,
        0.0,
        0.345_714_009_825_143_94,
        0.841_191_990_608_276_8,
        1.954_597_694_087_775,
    ];
    assert_close64("gelu_tanh", &x.gelu_tanh().to_vec_f64(), &gelu_tanh, 1e-12);
    let f32_gelu = Tensor::from_vec(
        pts.iter().map(|&v| v as f32).collect(),
        &[7],
        &Device::cpu(),
    )
    .gelu()
    .to_vec_f64();
    assert_close64("gelu (erf) in f32", &f32_gelu, &gelu, 1e-6);
    let map = |f: fn(f64) -> f64| pts.iter().map(|&v| f(v)).collect::<Vec<_>>();
    assert_close64(
        "sigmoid",
        &x.sigmoid().to_vec_f64(),
        &map(|v| 1.0 / (1.0 + (-v).exp())),
        1e-15,
    );
    assert_close64(
        "silu",
        &x.silu().to_vec_f64(),
        &map(|v| v / (1.0 + (-v).exp())),
        1e-15,
    );
    assert_close64("tanh", &x.tanh().to_vec_f64(), &map(f64::tanh), 1e-15);
    assert_close64("relu", &x.relu().to_vec_f64(), &map(|v| v.max(0.0)), 0.0);
    assert_close64("abs", &x.abs().to_vec_f64(), &map(f64::abs), 0.0);
    assert_close64(
        "sign",
        &x.sign().to_vec_f64(),
        &[-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0],
        0.0,
    );
    assert_close64(
        "clamp",
        &x.clamp(-1.0, 0.5).to_vec_f64(),
        &[-1.0, -1.0, -0.5, 0.0, 0.5, 0.5, 0.5],
        0.0,
    );
    assert_close64("square", &x.square().to_vec_f64(), &map(|v| v * v), 0.0);
    assert_close64("neg", &x.neg().to_vec_f64(), &map(|v| -v), 0.0);
    assert_close64("exp", &x.exp().to_vec_f64(), &map(f64::exp), 1e-15);
    assert_close64(
        "powf 3",
        &x.powf(3.0).to_vec_f64(),
        &map(|v| v * v * v),
        1e-14,
    );
    let p = const64(vec![0.25, 1.0, 4.0], &[3]);
    assert_close64("sqrt", &p.sqrt().to_vec_f64(), &[0.5, 1.0, 2.0], 0.0);
    assert_close64("rsqrt", &p.rsqrt().to_vec_f64(), &[2.0, 1.0, 0.5], 1e-15);
    assert_close64("recip", &p.recip().to_vec_f64(), &[4.0, 1.0, 0.25], 0.0);
    assert_close64(
        "log",
        &p.log().to_vec_f64(),
        &[-(4f64.ln()), 0.0, 4f64.ln()],
        1e-15,
    );
    assert_close64(
        "pow",
        &p.pow(&const64(vec![0.5, 3.0, -0.5], &[3])).to_vec_f64(),
        &[0.5, 1.0, 0.5],
        1e-15,
    );
    assert_close64(
        "maximum",
        &x.maximum(&const64(vec![0.0], &[])).to_vec_f64(),
        &map(|v| v.max(0.0)),
        0.0,
    );
    assert_close64(
        "minimum",
        &x.minimum(&const64(vec![0.0], &[])).to_vec_f64(),
        &map(|v| v.min(0.0)),
        0.0,
    );
}

#[test]
fn ties_share_the_gradient() {
    // maximum/minimum: equal operands split the gradient evenly (as PyTorch).
    let a = leaf64(vec![1.0, 2.0, 3.0], &[3]);
    let b = leaf64(vec![1.0, 5.0, 0.0], &[3]);
    a.maximum(&b).sum_all().backward();
    assert_eq!(a.grad().unwrap().to_vec_f64(), [0.5, 0.0, 1.0]);
    assert_eq!(b.grad().unwrap().to_vec_f64(), [0.5, 1.0, 0.0]);
    // max over an axis: tied maxima share evenly.
    let x = leaf64(vec![2.0, 2.0, 1.0, 0.0, 3.0, 3.0], &[2, 3]);
    x.max(1, false).sum_all().backward();
    assert_eq!(
        x.grad().unwrap().to_vec_f64(),
        [0.5, 0.5, 0.0, 0.0, 0.5, 0.5]
    );
}

#[test]
fn view_values() {
    let x = const64((0..6).map(f64::from).collect(), &[2, 3]);
    assert_eq!(x.t().to_vec_f64(), [0., 3., 1., 4., 2., 5.]);
    assert_eq!(x.narrow(1, 1, 2).to_vec_f64(), [1., 2., 4., 5.]);
    assert_eq!(
        x.expand(&[2, 2, 3]).to_vec_f64(),
        [0., 1., 2., 3., 4., 5., 0., 1., 2., 3., 4., 5.]
    );
    assert_eq!(
        Tensor::cat(&[&x, &x.narrow(1, 0, 1)], 1).to_vec_f64(),
        [0., 1., 2., 0., 3., 4., 5., 3.]
    );
    assert_eq!(
        Tensor::stack(&[&x, &x], 2).to_vec_f64(),
        [0., 0., 1., 1., 2., 2., 3., 3., 4., 4., 5., 5.]
    );
    assert_eq!(
        x.index_select(1, &[2, 0, 2]).to_vec_f64(),
        [2., 0., 2., 5., 3., 5.]
    );
    assert_eq!(x.reshape(&[3, -1]).shape(), [3, 2]);
    assert_eq!(
        x.masked_fill(&const64(vec![1.0, 0.0, 0.0], &[3]), -9.0)
            .to_vec_f64(),
        [-9., 1., 2., -9., 4., 5.]
    );
    assert_eq!(
        x.where_(&const64(vec![1.0, 0.0], &[2, 1]), &const64(vec![7.0], &[]))
            .to_vec_f64(),
        [0., 1., 2., 7., 7., 7.]
    );
}

// ---------------------------------------------------------------------------------------------
// Autograd semantics
// ---------------------------------------------------------------------------------------------

#[test]
fn gradient_accumulates_when_a_tensor_is_used_twice() {
    let x = leaf64(vec![1.0, -2.0, 3.0], &[3]);
    (&(&x * &x) + &x).sum_all().backward();
    assert_eq!(
        x.grad().unwrap().to_vec_f64(),
        [3.0, -3.0, 7.0],
        "d/dx (x² + x) = 2x + 1"
    );
    let y = leaf64(vec![0.5, 1.5], &[2]);
    (&y + &y).sum_all().backward();
    assert_eq!(y.grad().unwrap().to_vec_f64(), [2.0, 2.0]);
    // A diamond: z = a·b + a·c, b = 2a, c = a² → dz/da = 4a + 3a².
    let a = leaf64(vec![1.0, 2.0], &[2]);
    let b = a.mul_scalar(2.0);
    let c = a.square();
    (&(&a * &b) + &(&a * &c)).sum_all().backward();
    assert_eq!(a.grad().unwrap().to_vec_f64(), [7.0, 20.0]);
}

#[test]
fn detach_stops_the_gradient() {
    let x = leaf64(vec![1.0, 2.0, 3.0], &[3]);
    let d = x.detach();
    assert!(
        !d.requires_grad(),
        "a detached tensor does not require grad"
    );
    assert_eq!(d.to_vec_f64(), x.to_vec_f64());
    (&x * &d).sum_all().backward();
    assert_eq!(
        x.grad().unwrap().to_vec_f64(),
        [1.0, 2.0, 3.0],
        "only the non-detached factor gets a gradient"
    );
    assert!(d.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let x = leaf64(vec![1.0, 2.0], &[2]);
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        assert!(!is_grad_enabled());
        x.square().sum_all()
    });
    assert!(is_grad_enabled(), "grad mode is restored after no_grad");
    assert!(
        !y.requires_grad(),
        "a result computed under no_grad does not require grad"
    );
    {
        let _outer = NoGradGuard::new();
        {
            let _inner = NoGradGuard::new();
        }
        assert!(!is_grad_enabled(), "guards nest");
        assert!(!x.exp().requires_grad());
    }
    assert!(is_grad_enabled());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.backward()));
    assert!(caught.is_err(), "backward on a no_grad result must panic");
    assert!(x.grad().is_none(), "nothing reached x");
    // Ops on tensors that do not require grad record nothing either.
    assert!(!const64(vec![1.0], &[1]).exp().requires_grad());
}

#[test]
#[should_panic(expected = "backward: the tensor does not require grad")]
fn backward_under_no_grad_result_panics() {
    let x = leaf64(vec![1.0, 2.0], &[2]);
    no_grad(|| x.square().sum_all()).backward();
}

#[test]
fn zero_grad_clears() {
    let x = leaf64(vec![1.0, 2.0], &[2]);
    x.square().sum_all().backward();
    assert!(x.grad().is_some());
    x.zero_grad();
    assert!(x.grad().is_none(), "zero_grad clears the gradient");
    x.mul_scalar(3.0).sum_all().backward();
    assert_eq!(
        x.grad().unwrap().to_vec_f64(),
        [3.0, 3.0],
        "a fresh gradient after zero_grad"
    );
}

#[test]
fn grads_accumulate_across_backward_calls() {
    // As in PyTorch, two backward passes (over two graphs) add into .grad.
    let x = leaf64(vec![1.0, 2.0], &[2]);
    x.square().sum_all().backward();
    x.square().sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec_f64(), [4.0, 8.0]);
    x.mul_scalar(0.5).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec_f64(), [4.5, 8.5]);
}

/// A second `backward()` through a graph whose saved tensors the first one freed is refused with
/// a clear message (PyTorch: "Trying to backward through the graph a second time"), rather than
/// silently doing nothing.
#[test]
#[should_panic(expected = "backward: trying to go through the graph a second time")]
fn second_backward_through_a_freed_graph_is_refused() {
    let x = leaf64(vec![1.0, 2.0], &[2]);
    let loss = x.square().sum_all();
    loss.backward();
    assert_eq!(x.grad().unwrap().to_vec_f64(), [2.0, 4.0]);
    loss.backward();
}

#[test]
fn requires_grad_propagates() {
    let a = leaf64(vec![1.0], &[1]);
    let b = const64(vec![2.0], &[1]);
    assert!((&a * &b).requires_grad());
    assert!(!(&b * &b).requires_grad());
    assert!(a.reshape(&[1, 1]).requires_grad());
    let c = b.clone().requires_grad_(true);
    assert!(
        c.requires_grad() && b.requires_grad(),
        "clones share the flag"
    );
    c.set_requires_grad(false);
    assert!(!b.requires_grad());
}

#[test]
fn set_data_keeps_identity_and_flags() {
    let p = leaf64(vec![1.0, 2.0], &[2]);
    p.square().sum_all().backward();
    no_grad(|| p.set_data(&const64(vec![5.0, 6.0], &[2])));
    assert!(p.requires_grad());
    assert_eq!(p.to_vec_f64(), [5.0, 6.0]);
    assert_eq!(
        p.grad().unwrap().to_vec_f64(),
        [2.0, 4.0],
        "set_data keeps the gradient"
    );
    p.zero_grad();
    p.square().sum_all().backward();
    assert_eq!(
        p.grad().unwrap().to_vec_f64(),
        [10.0, 12.0],
        "the graph uses the new data"
    );
}

#[test]
fn backward_with_explicit_gradient() {
    let x = leaf64(vec![1.0, 2.0, 3.0], &[3]);
    x.square()
        .backward_with(const64(vec![1.0, 0.0, -1.0], &[3]));
    assert_eq!(x.grad().unwrap().to_vec_f64(), [2.0, 0.0, -6.0]);
}

// ---------------------------------------------------------------------------------------------
// Error paths
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "backward: needs a scalar, got shape [3]")]
fn backward_on_non_scalar_panics() {
    leaf64(vec![1.0, 2.0, 3.0], &[3]).square().backward();
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn add_shape_mismatch() {
    let _ = const64(vec![0.0; 6], &[2, 3]).add(&const64(vec![0.0; 4], &[4]));
}

#[test]
#[should_panic(expected = "mul: shapes [3, 2] and [3] cannot be broadcast together")]
fn mul_operator_shape_mismatch() {
    let _ = &const64(vec![0.0; 6], &[3, 2]) * &const64(vec![0.0; 3], &[3]);
}

#[test]
#[should_panic(expected = "where: shapes")]
fn where_shape_mismatch() {
    let _ = const64(vec![0.0; 6], &[2, 3]).where_(
        &const64(vec![1.0; 2], &[2]),
        &const64(vec![0.0; 6], &[2, 3]),
    );
}

#[test]
#[should_panic(expected = "add: operands have different dtypes (F64 and F32)")]
fn dtype_mismatch() {
    let _ = const64(vec![0.0; 2], &[2]).add(&const32(vec![0.0; 2], &[2]));
}

#[test]
#[should_panic(expected = "sum: axis 2 is out of range for a tensor of rank 2")]
fn sum_bad_axis() {
    let _ = const64(vec![0.0; 6], &[2, 3]).sum(2, false);
}

#[test]
#[should_panic(expected = "softmax: axis -3 is out of range for a tensor of rank 2")]
fn softmax_bad_axis() {
    let _ = const64(vec![0.0; 6], &[2, 3]).softmax(-3);
}

#[test]
#[should_panic(expected = "max: axis 3 is out of range for a tensor of rank 3")]
fn max_bad_axis() {
    let _ = const64(vec![0.0; 6], &[1, 2, 3]).max(3, true);
}

#[test]
#[should_panic(expected = "transpose: axis 2 is out of range for a tensor of rank 2")]
fn transpose_bad_axis() {
    let _ = const64(vec![0.0; 6], &[2, 3]).transpose(0, 2);
}

#[test]
#[should_panic(expected = "reshape: cannot view a tensor of shape [2, 3] (6 elements) as [4, 2]")]
fn reshape_bad_size() {
    let _ = const64(vec![0.0; 6], &[2, 3]).reshape(&[4, 2]);
}

#[test]
#[should_panic(expected = "reshape: invalid target shape [-1, -1]")]
fn reshape_two_unknowns() {
    let _ = const64(vec![0.0; 6], &[2, 3]).reshape(&[-1, -1]);
}

#[test]
#[should_panic(expected = "matmul: inner dimensions differ: [2, 3] @ [4, 5]")]
fn matmul_inner_mismatch() {
    let _ = const64(vec![0.0; 6], &[2, 3]).matmul(&const64(vec![0.0; 20], &[4, 5]));
}

#[test]
#[should_panic(expected = "matmul: shapes [2] and [3] cannot be broadcast together")]
fn matmul_batch_mismatch() {
    let _ = const64(vec![0.0; 12], &[2, 2, 3]).matmul(&const64(vec![0.0; 18], &[3, 3, 2]));
}

#[test]
#[should_panic(expected = "matmul: operands need at least 2 axes")]
fn matmul_vector_operand() {
    let _ = const64(vec![0.0; 3], &[3]).matmul(&const64(vec![0.0; 6], &[3, 2]));
}

#[test]
#[should_panic(expected = "cross_entropy: target 3 at row 1 is not a class in 0..3")]
fn cross_entropy_target_out_of_range() {
    let _ = const64(vec![0.0; 6], &[2, 3]).cross_entropy(&[0, 3], -100, 0.0);
}

#[test]
#[should_panic(expected = "cross_entropy: target -2 at row 0 is not a class in 0..3")]
fn cross_entropy_negative_target() {
    let _ = const64(vec![0.0; 6], &[2, 3]).cross_entropy(&[-2, 0], -100, 0.0);
}

#[test]
#[should_panic(expected = "cross_entropy: 1 targets for 2 rows")]
fn cross_entropy_wrong_target_count() {
    let _ = const64(vec![0.0; 6], &[2, 3]).cross_entropy(&[0], -100, 0.0);
}

#[test]
#[should_panic(expected = "narrow: range 2..5 is out of bounds for axis 1 of shape [2, 3]")]
fn narrow_out_of_bounds() {
    let _ = const64(vec![0.0; 6], &[2, 3]).narrow(1, 2, 3);
}

#[test]
#[should_panic(expected = "permute: [0, 0] is not a permutation")]
fn permute_invalid() {
    let _ = const64(vec![0.0; 6], &[2, 3]).permute(&[0, 0]);
}

#[test]
#[should_panic(expected = "cat: shape [2, 4] does not match [2, 3] outside axis 0")]
fn cat_mismatch() {
    let (a, b) = (
        const64(vec![0.0; 6], &[2, 3]),
        const64(vec![0.0; 8], &[2, 4]),
    );
    let _ = Tensor::cat(&[&a, &b], 0);
}

#[test]
#[should_panic(expected = "expand: shapes [2, 3] and [4, 3] cannot be broadcast together")]
fn expand_invalid() {
    let _ = const64(vec![0.0; 6], &[2, 3]).expand(&[4, 3]);
}

#[test]
#[should_panic(expected = "squeeze: axis 0 of shape [2, 3] is not 1")]
fn squeeze_non_unit() {
    let _ = const64(vec![0.0; 6], &[2, 3]).squeeze(0);
}

#[test]
#[should_panic(expected = "index_select: index 3 is out of range for axis 0 of shape [3, 2]")]
fn index_select_out_of_range() {
    let _ = embedding(&const64(vec![0.0; 6], &[3, 2]), &[0, 3]);
}

#[test]
#[should_panic(expected = "layer_norm: weight of shape [4] does not match the last axis of [2, 3]")]
fn layer_norm_weight_mismatch() {
    let _ =
        const64(vec![0.0; 6], &[2, 3]).layer_norm(Some(&const64(vec![1.0; 4], &[4])), None, 1e-5);
}

#[test]
#[should_panic(expected = "attention: shapes q [2, 5, 4], k [2, 7, 3], v [2, 7, 3] do not agree")]
fn attention_shape_mismatch() {
    let q = const64(vec![0.0; 40], &[2, 5, 4]);
    let k = const64(vec![0.0; 42], &[2, 7, 3]);
    let _ = Tensor::scaled_dot_product_attention(&q, &k, &k, false, None, None);
}

#[test]
#[should_panic(expected = "dropout: probability 1 is not in [0, 1)")]
fn dropout_bad_probability() {
    let _ = const64(vec![0.0; 6], &[2, 3]).dropout(1.0, 0, true);
}

#[test]
#[should_panic(expected = "clamp: lower bound 1 exceeds upper bound 0")]
fn clamp_inverted_bounds() {
    let _ = const64(vec![0.0; 6], &[2, 3]).clamp(1.0, 0.0);
}

#[test]
#[should_panic(expected = "from_vec: 5 values cannot fill shape [2, 3]")]
fn from_vec_wrong_length() {
    let _ = Tensor::from_vec(vec![0.0; 5], &[2, 3], &Device::cpu());
}

#[test]
#[should_panic(expected = "item: tensor of shape [2] has 2 elements, not 1")]
fn item_on_vector() {
    let _ = const64(vec![0.0; 2], &[2]).item();
}

// ---------------------------------------------------------------------------------------------
// The CPU reference on large inputs (its parallel code paths), against naive loops and composed ops
// ---------------------------------------------------------------------------------------------

/// 130 × 257 = 33 410 elements: above the CPU backend's 32 768-element threshold for splitting
/// work across threads, so these take the parallel paths that small gradient checks never reach
/// (and that the GPU tests use as their reference).
const BIG: [usize; 2] = [130, 257];

#[test]
fn cpu_parallel_paths_match_naive_loops() {
    let (r, c) = (BIG[0], BIG[1]);
    let a = normal(&BIG, 1);
    let b = normal(&[c], 2);
    let col = normal(&[r, 1], 3);
    let (ta, tb, tcol) = (
        const64(a.clone(), &BIG),
        const64(b.clone(), &[c]),
        const64(col.clone(), &[r, 1]),
    );
    let want: Vec<f64> = (0..r * c).map(|i| a[i] * b[i % c]).collect();
    assert_close64("mul (130,257)·(257)", &ta.mul(&tb).to_vec_f64(), &want, 0.0);
    let want: Vec<f64> = (0..r * c).map(|i| b[i % c] - a[i]).collect();
    assert_close64("sub (257)-(130,257)", &tb.sub(&ta).to_vec_f64(), &want, 0.0);
    let want: Vec<f64> = (0..r * c).map(|i| col[i / c] + b[i % c]).collect();
    assert_close64("add (130,1)+(257)", &tcol.add(&tb).to_vec_f64(), &want, 0.0);
    let want: Vec<f64> = a.iter().map(|v| v.exp()).collect();
    assert_close64("exp", &ta.exp().to_vec_f64(), &want, 0.0);
    let cond = bernoulli(&BIG, 0.5, 4);
    let want: Vec<f64> = (0..r * c)
        .map(|i| if cond[i] != 0.0 { a[i] } else { b[i % c] })
        .collect();
    assert_close64(
        "where",
        &ta.where_(&const64(cond, &BIG), &tb).to_vec_f64(),
        &want,
        0.0,
    );
    let want: Vec<f64> = (0..r * c).map(|i| a[(i % r) * c + i / r]).collect();
    assert_close64("transpose", &ta.t().to_vec_f64(), &want, 0.0);
    let want: Vec<f64> = (0..r).map(|i| a[i * c..(i + 1) * c].iter().sum()).collect();
    assert_close64("sum axis 1", &ta.sum(1, false).to_vec_f64(), &want, 1e-12);
    let want: Vec<f64> = (0..c).map(|j| (0..r).map(|i| a[i * c + j]).sum()).collect();
    assert_close64("sum axis 0", &ta.sum(0, false).to_vec_f64(), &want, 1e-12);
    let want: Vec<f64> = (0..c)
        .map(|j| {
            (0..r)
                .map(|i| a[i * c + j])
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    assert_close64("max axis 0", &ta.max(0, false).to_vec_f64(), &want, 0.0);
    let want: Vec<f64> = (0..r)
        .map(|i| {
            let row = &a[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            row.iter().position(|&v| v == m).unwrap() as f64
        })
        .collect();
    assert_close64(
        "argmax axis 1",
        &ta.argmax(1, false).to_vec_f64(),
        &want,
        0.0,
    );
    let want: Vec<f64> = (0..r * c)
        .map(|i| {
            let row = &a[(i / c) * c..(i / c + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (a[i] - m).exp() / row.iter().map(|v| (v - m).exp()).sum::<f64>()
        })
        .collect();
    assert_close64("softmax rows", &ta.softmax(-1).to_vec_f64(), &want, 1e-14);
    let want: Vec<f64> = (0..r * c)
        .map(|i| {
            let row = &a[(i / c) * c..(i / c + 1) * c];
            let m = row.iter().sum::<f64>() / c as f64;
            let v = row.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / c as f64;
            (a[i] - m) / (v + 1e-5).sqrt()
        })
        .collect();
    assert_close64(
        "layer_norm rows",
        &ta.layer_norm(None, None, 1e-5).to_vec_f64(),
        &want,
        1e-12,
    );
    // One large product (split across threads) and a batch of small ones (one per thread).
    let bt = normal(&[c, r], 5);
    let want: Vec<f64> = (0..r * r)
        .map(|i| (0..c).map(|k| a[(i / r) * c + k] * bt[k * r + i % r]).sum())
        .collect();
    assert_close64(
        "matmul (130,257)@(257,130)",
        &ta.matmul(&const64(bt, &[c, r])).to_vec_f64(),
        &want,
        1e-11,
    );
    let (x, y) = (normal(&[8, 33, 17], 6), normal(&[8, 17, 33], 7));
    let want: Vec<f64> = (0..8 * 33 * 33)
        .map(|i| {
            let (bi, row, colm) = (i / (33 * 33), (i / 33) % 33, i % 33);
            (0..17)
                .map(|k| x[(bi * 33 + row) * 17 + k] * y[(bi * 17 + k) * 33 + colm])
                .sum()
        })
        .collect();
    let got = const64(x, &[8, 33, 17])
        .matmul(&const64(y, &[8, 17, 33]))
        .to_vec_f64();
    assert_close64("matmul (8,33,17)@(8,17,33)", &got, &want, 1e-12);
}

/// Gradients of `out · w` for a fused op and for the same function composed from basic ops.
fn fused_vs_composed(
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
) {
    let inputs = inputs.as_ref();
    let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
        let leaves: Vec<Tensor> = inputs
            .iter()
            .map(|t| Tensor::from_vec_f64(t.to_vec_f64(), t.shape()).requires_grad_(true))
            .collect();
        let out = f(&leaves);
        let w = const64(loss_weights(out.shape(), 77), out.shape());
        (&out * &w).sum_all().backward();
        let grads: Vec<Vec<f64>> = leaves
            .iter()
            .map(|l| l.grad().unwrap().to_vec_f64())
            .collect();
        (out.to_vec_f64(), grads)
    };
    let (fo, fg) = run(&fused);
    let (co, cg) = run(&composed);
    assert_close64(&format!("{name}: forward"), &fo, &co, 1e-10);
    for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
        assert_close64(&format!("{name}: gradient of input {i}"), f, c, 1e-10);
    }
}

#[test]
fn cpu_fused_kernels_match_composed_ops_on_large_inputs() {
    let x = const64(normal(&BIG, 1).into_iter().map(|v| 3.0 * v).collect(), &BIG);
    fused_vs_composed(
        "layer_norm (130,257)",
        [x.clone()],
        |t| t[0].layer_norm(None, None, 1e-5),
        |t| &(&t[0] - &t[0].mean(-1, true)) * &t[0].var(-1, true, 0).add_scalar(1e-5).rsqrt(),
    );
    fused_vs_composed(
        "softmax (130,257)",
        [x.clone()],
        |t| t[0].softmax(-1),
        |t| {
            let e = (&t[0] - &t[0].max(-1, true).detach()).exp();
            &e / &e.sum(-1, true)
        },
    );
    fused_vs_composed(
        "log_softmax (130,257)",
        [x.clone()],
        |t| t[0].log_softmax(-1),
        |t| {
            let m = t[0].max(-1, true).detach();
            &(&t[0] - &m) - &(&t[0] - &m).exp().sum(-1, true).log()
        },
    );
    fused_vs_composed(
        "softmax axis 0 (130,257)",
        &[x],
        |t| t[0].softmax(0),
        |t| {
            let e = (&t[0] - &t[0].max(0, true).detach()).exp();
            &e / &e.sum(0, true)
        },
    );
    // 2·3·100·100 = 60 000 scores: the attention kernel's parallel path. D = 16 keeps 1/√D exact.
    let s = [2usize, 3, 100, 16];
    let qkv = [
        const64(normal(&s, 2), &s),
        const64(normal(&s, 3), &s),
        const64(normal(&s, 4), &s),
    ];
    let mask = const64(bernoulli(&[2, 100], 0.2, 5), &[2, 100]);
    for causal in [false, true] {
        fused_vs_composed(
            &format!("attention (2,3,100,16) causal={causal}"),
            &qkv,
            |t| {
                Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], causal, Some(&mask), None)
            },
            |t| reference_attention(&t[0], &t[1], &t[2], causal, Some(&mask), 0.25),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

#[test]
fn mlp_loss_falls_on_cpu() {
    let losses = train_mlp(&Device::cpu(), MLP_STEPS);
    assert_eq!(losses.len(), MLP_STEPS);
    assert!(
        losses.iter().all(|l| l.is_finite()),
        "non-finite loss: {losses:?}"
    );
    let (first, last) = (losses[0], losses[MLP_STEPS - 1]);
    assert!(
        last < 0.5 * first,
        "the MLP did not learn: loss {first} → {last}\n{losses:?}"
    );
}

/// conv2d (a window gather, then `linear`) equals a direct convolution, padding included, and its
/// gradients reach the input, weight and bias.
#[test]
fn grad_conv2d() {
    // x (B 2, H 5, W 6, C 3); 4 filters of 3×3×3 taps; stride 2, padding 1 → (2, 3, 3, 4)
    let (b, h, w, c, o, k) = (2, 5, 6, 3, 4, 3);
    let x = leaf64(normal(&[b, h, w, c], 1), &[b, h, w, c]);
    let wt = leaf64(normal(&[o, k * k * c], 2), &[o, k * k * c]);
    let bias = leaf64(normal(&[o], 3), &[o]);
    let y = selfsup_engine::nn::conv2d(&x, &wt, Some(&bias), k, 2, 1);
    assert_eq!(y.shape(), &[b, 3, 3, o]);
    let (xv, wv, bv) = (x.to_vec_f64(), wt.to_vec_f64(), bias.to_vec_f64());
    let mut want = Vec::new();
    for (n, oy, ox, f) in (0..b).flat_map(|n| {
        (0..3).flat_map(move |oy| (0..3).flat_map(move |ox| (0..o).map(move |f| (n, oy, ox, f))))
    }) {
        let mut acc = bv[f];
        for (ky, kx, ch) in
            (0..k).flat_map(|ky| (0..k).flat_map(move |kx| (0..c).map(move |ch| (ky, kx, ch))))
        {
            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                let xi = ((n * h + iy as usize) * w + ix as usize) * c + ch;
                acc += xv[xi] * wv[f * k * k * c + (ky * k + kx) * c + ch];
            }
        }
        want.push(acc);
    }
    assert_close64("conv2d values", &y.to_vec_f64(), &want, 1e-12);
    gradcheck(
        "conv2d 3×3 stride 2 pad 1",
        [x.clone(), wt.clone(), bias],
        |t| selfsup_engine::nn::conv2d(&t[0], &t[1], Some(&t[2]), k, 2, 1),
    );
    // No padding, stride 1: a 2×2 kernel over the 5×6 map, 4×5 outputs.
    let w2 = leaf64(normal(&[o, 4 * c], 4), &[o, 4 * c]);
    gradcheck("conv2d 2×2 stride 1 no pad", [x, w2], |t| {
        selfsup_engine::nn::conv2d(&t[0], &t[1], None, 2, 1, 0)
    });
}
