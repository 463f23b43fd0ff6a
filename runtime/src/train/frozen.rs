//! How the frozen projection weights are held during fine-tuning, shared by
//! both back ends: the GPU stores them as bf16 ([`FrozenDtype::Bf16`]), and
//! the CPU can round them to the same bf16 values ([`round_frozen_to_bf16`])
//! so that it computes with the weights the GPU holds.

use std::collections::HashSet;

use half::bf16;
use ligerc_ir::{Graph, Op, TensorData};

use super::TrainError;

/// How the frozen projection weights are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FrozenDtype {
    /// bf16: on the GPU half the memory, products with bf16 operands and f32
    /// accumulation (as PyTorch autocast); on the CPU the weights are rounded
    /// to bf16 values and the math stays f32. LoRA parameters, optimizer
    /// state and every activation stay f32.
    #[default]
    Bf16,
    /// f32, as loaded.
    F32,
}

/// Frozen weights that are only ever the weight operand of a projection
/// (`Linear`, `LmHead`, `Lora` and their backward) in every graph: those can
/// be held as bf16. A weight also read elsewhere (a tied embedding table, a
/// norm scale) stays f32, and so does every trainable weight.
pub fn projection_only_weights(graphs: &[&Graph], trainable: &[String]) -> HashSet<String> {
    let is_projection = |op: &Op| matches!(op, Op::Linear | Op::LmHead | Op::Lora { .. });
    let mut ok: HashSet<String> = HashSet::new();
    let mut other: HashSet<String> = HashSet::new();
    for g in graphs {
        for id in g.node_ids() {
            let Ok(node) = g.try_node(id) else { continue };
            let projection = match &node.op {
                Op::Vjp(v) => is_projection(&v.forward),
                op => is_projection(op),
            };
            for (pos, v) in g.operands(id).into_iter().enumerate() {
                let Ok(src) = g.try_node(v.node) else {
                    continue;
                };
                if let Op::Weight { name } = &src.op {
                    if projection && pos == 1 {
                        ok.insert(name.clone());
                    } else {
                        other.insert(name.clone());
                    }
                }
            }
        }
    }
    ok.retain(|n| !other.contains(n) && !trainable.contains(n));
    ok
}

/// Rounds every frozen projection weight of `graphs` (see
/// [`projection_only_weights`]) to the nearest bf16 value, ties to even, and
/// stores it back as f32: the CPU then computes with exactly the weights that
/// `--backend cuda --frozen-dtype bf16` uploads. Returns how many weights were
/// rounded (a weight shared by several graphs counts once).
pub fn round_frozen_to_bf16(
    graphs: &mut [&mut Graph],
    trainable: &[String],
) -> Result<usize, TrainError> {
    let names = {
        let refs: Vec<&Graph> = graphs.iter().map(|g| &**g).collect();
        projection_only_weights(&refs, trainable)
    };
    for g in graphs.iter_mut() {
        for (name, data) in g.weights.iter_mut() {
            if !names.contains(name) {
                continue;
            }
            // bf16 values are exact in f64 and in the weight's own dtype (f32,
            // or f16 within its range), so the stored dtype stays what the
            // graph declares.
            let rounded: Vec<f64> = data
                .to_f32_vec()
                .into_iter()
                .map(|x| f64::from(bf16::from_f32(x).to_f32()))
                .collect();
            *data = TensorData::from_f64_as(data.dtype(), data.shape().to_vec(), &rounded)
                .map_err(|e| {
                    TrainError::Config(format!("rounding weight '{name}' to bf16: {e}"))
                })?;
        }
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ligerc_ir::{DType, TensorType};

    /// A graph with a projection weight `w`, a tied table `emb` read by both
    /// `Embedding` and `LmHead`, a norm scale `g` and a trainable `lora`.
    fn graph(values: &[f32]) -> Graph {
        let mut g = Graph::new("frozen");
        let ids = g.add_input("ids", TensorType::fixed(DType::I64, &[1, 2]));
        let n = values.len();
        let emb = g.add_weight(
            "emb",
            TensorData::from_f32(vec![4, n], &[0.3; 16][..4 * n]).unwrap(),
        );
        let w = g.add_weight("w", TensorData::from_f32(vec![1, n], values).unwrap());
        let scale = g.add_weight("g", TensorData::from_f32(vec![n], values).unwrap());
        let lora = g.add_weight("lora", TensorData::from_f32(vec![1, n], values).unwrap());
        let h = g.add(
            Op::Embedding,
            &[emb, ids],
            TensorType::fixed(DType::F32, &[1, 2, n]),
        );
        let h = g.add(
            Op::RmsNorm { eps: 1e-6 },
            &[h, scale],
            TensorType::fixed(DType::F32, &[1, 2, n]),
        );
        let y = g.add(
            Op::Linear,
            &[h, w],
            TensorType::fixed(DType::F32, &[1, 2, 1]),
        );
        let z = g.add(
            Op::Linear,
            &[h, lora],
            TensorType::fixed(DType::F32, &[1, 2, 1]),
        );
        let logits = g.add(
            Op::LmHead,
            &[h, emb],
            TensorType::fixed(DType::F32, &[1, 2, 4]),
        );
        for (name, v) in [("y", y), ("z", z), ("logits", logits)] {
            g.add_output(name, v);
        }
        g
    }

    #[test]
    fn only_frozen_projection_weights_are_bf16() {
        let g = graph(&[1.0, 2.0, 3.0, 4.0]);
        let names = projection_only_weights(&[&g], &["lora".to_string()]);
        // `emb` is also an Embedding table, `g` a norm scale, `lora` trainable.
        assert_eq!(names, HashSet::from(["w".to_string()]));
    }

    #[test]
    fn rounding_is_to_nearest_bf16_ties_to_even() {
        // bf16 keeps 8 significant bits: near 1 its spacing is 2^-7. Expected
        // values worked out by hand from that spacing.
        let ulp = 2f32.powi(-7);
        let values = [
            1.0 + ulp / 2.0,       // a tie: to the even neighbour, 1
            1.0 + 3.0 * ulp / 2.0, // a tie: to the even neighbour, 1 + 2 ulp
            1.0 + 0.75 * ulp,      // above half: up
            -(1.0 + 0.25 * ulp),   // below half: down in magnitude
        ];
        let expected = [1.0, 1.0 + 2.0 * ulp, 1.0 + ulp, -1.0];
        let mut g = graph(&values);
        let mut e = graph(&values);
        let n = round_frozen_to_bf16(&mut [&mut g, &mut e], &["lora".to_string()]).unwrap();
        assert_eq!(n, 1);
        for gr in [&g, &e] {
            assert_eq!(gr.weights["w"].to_f32_vec(), expected);
            // Everything else is untouched.
            assert_eq!(gr.weights["g"].to_f32_vec(), values);
            assert_eq!(gr.weights["lora"].to_f32_vec(), values);
            assert_eq!(gr.weights["emb"].to_f32_vec(), vec![0.3; 16]);
        }
    }
}
