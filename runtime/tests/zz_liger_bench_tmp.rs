use std::time::Instant;
use ligerc_ir::{LigerSpec, LigerVariant, NodeId, Op};
use ligerc_runtime::ops::{LigerMode, eval_high_level};
use ligerc_runtime::{ExecState, Tensor};
#[test]
fn bench() {
    let (b, t, h, hkv, d) = (1, 1024, 9, 3, 64);
    let mk = |f: usize, seed: u32| Tensor::f32(vec![b, t, f], (0..b*t*f).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) % 1000) as f32 / 500.0 - 1.0).collect()).unwrap();
    for variant in [LigerVariant::Gla, LigerVariant::Gsa] {
        let spec = LigerSpec { variant, heads: h, kv_heads: hkv, head_dim: d, window: 64, mix_window: 0.5, mix_linear: 0.5, slots: 64 };
        let w = variant.gate_width(d, 64);
        let gate = Tensor::f32(vec![b, t, hkv*w], vec![-0.05; b*t*hkv*w]).unwrap();
        let ops = [mk(h*d,1), mk(hkv*d,2), mk(hkv*d,3), mk(h*d,4), mk(hkv*d,5), gate];
        let refs: Vec<&Tensor> = ops.iter().collect();
        for mode in [LigerMode::Chunked{chunk:64}, LigerMode::Recurrent, LigerMode::Quadratic] {
            let mut st = ExecState { liger_mode: mode, ..Default::default() };
            let t0 = Instant::now();
            eval_high_level(&Op::LigerAttention(spec.clone()), NodeId::new(0), &refs, &mut st).unwrap();
            eprintln!("{variant} {mode:?}: {:?}", t0.elapsed());
        }
    }
}
