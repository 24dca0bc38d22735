//! Define-by-run reverse-mode differentiation.
//!
//! Every op whose inputs need gradients stores a [`Node`] in its output: the inputs and a closure
//! that maps the output's gradient to theirs, written with ordinary tensor ops so that it runs on
//! whichever backend holds the data. `backward` walks the nodes in reverse topological order,
//! consuming each closure (which frees the saved activations as it goes).

use crate::tensor::{GraphRef, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// Maps the gradient of an op's output to the gradients of its inputs (None: no gradient).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Vec<Option<Tensor>> + Send>;

pub(crate) struct Node {
    pub inputs: Vec<GraphRef>,
    pub backward: BackwardFn,
}

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether ops on this thread currently record the graph.
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Disables graph recording on this thread until dropped (evaluation, EMA teacher updates).
pub struct NoGradGuard(());

impl NoGradGuard {
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(())
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `f` without recording the graph.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Back-propagates `grad` (the gradient of `root`) through the graph, accumulating into the
/// `.grad()` of every leaf that requires it.
pub(crate) fn backward(root: &Tensor, grad: Tensor) {
    let _guard = NoGradGuard::new();
    let _f32 = crate::autocast::Autocast::suspend();
    let order = topological_order(root);
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    grads.insert(root.id(), grad);
    for t in order.iter().rev() {
        let Some(g) = grads.remove(&t.id()) else {
            continue;
        };
        let Some(node) = t.take_node() else {
            assert!(
                !t.node_consumed(),
                "backward: trying to go through the graph a second time; an earlier backward() \
                 freed its saved tensors (recompute the forward pass)"
            );
            t.accumulate_grad(&g);
            continue;
        };
        let input_grads = (node.backward)(&g);
        debug_assert_eq!(input_grads.len(), node.inputs.len());
        for (input, ig) in node.inputs.iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            let input = input.tensor();
            if !input.requires_grad() {
                continue;
            }
            assert_eq!(
                ig.shape(),
                input.shape(),
                "internal: gradient shape does not match its input"
            );
            match grads.remove(&input.id()) {
                Some(acc) => grads.insert(input.id(), &acc + &ig),
                None => grads.insert(input.id(), ig),
            };
        }
    }
}

/// Tensors reachable from `root` through recorded nodes, each after all of its inputs.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // (tensor, inputs already pushed)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs = t.node_inputs();
        stack.push((t, true));
        for i in inputs {
            if i.requires_grad() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    order
}
