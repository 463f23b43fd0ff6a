//! The chunk-parallel recurrence of a Liger prefill (`Lower::prefill_recurrence`): the
//! kernels of steps 1 and 2 — the key pass and the state pass where the tensor-core kernels
//! serve the recurrence, the per-chunk contributions and the scan elsewhere — then step 3.

use ligerc_ir::{DType, LigerSpec, NodeId};

use super::super::CudaError;
use super::super::kernels::liger::{self, Recurrence};
use super::super::plan::{Arg, Extent, Scalar};
use super::Lower;

/// Where a prefill's window branch goes.
pub(super) enum WindowIn {
    /// No window branch: step 3 writes `mix_linear · o`.
    None,
    /// The window kernel's `mix_window · y`, bf16 scratch that step 3 adds to.
    Part(Arg),
    /// Inside step 3 ([`liger::fused_prefill`]): the rotated queries and keys and the ring.
    Fused {
        /// `q_rot`, `k_rot`, `ring_k`, `ring_v`.
        ops: [Arg; 4],
    },
}

/// The key pass's outputs that step 3's one-product kernel reads, and the states it writes.
struct KeyPassTiles {
    /// The states entering the chunks, bf16.
    states_bf: Arg,
    /// `k̃ e^{−b}` per chunk, bf16.
    kmap: Arg,
    /// `e^{b}` per chunk, bf16.
    ebuf: Arg,
    /// Which chunks decay faster than `e^{−40}` (the sub-chunk kernel's), i32.
    slow: Arg,
}

impl Lower<'_> {
    /// The chunk-parallel recurrence of a Liger prefill: steps 1 and 2 from the stored
    /// `state` (which gets the final state) — the key pass and the state pass
    /// ([`liger::key_and_state_pass`]) for the tensor-core variants, else per-chunk state
    /// contributions into scratch and a scan — then the outputs per (chunk, query head or
    /// KV head ([`liger::gla_prefill_heads`]), row): for the tensor-core variants two
    /// launches on one grid, the bf16 `mma` kernel and the sub-chunk kernel
    /// ([`liger::gla_prefill_subchunk`]), each taking its own chunks by the key pass's flag.
    /// With [`WindowIn::Fused`] the first is the fused kernel, which writes the window part
    /// alone on the sub-chunk kernel's chunks, and the sub-chunk kernel adds to the output in
    /// place. `ops` = (queries, k, v, state).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prefill_recurrence(
        &mut self,
        spec: &LigerSpec,
        rec: Recurrence,
        normalizer: f64,
        nodes: &[NodeId],
        layer: usize,
        ops: [Arg; 4],
        window: WindowIn,
        out: Arg,
    ) -> Result<(), CudaError> {
        let [qs, k, v, state] = ops;
        let (kv, d) = (spec.kv_heads, spec.head_dim);
        let dk = liger::key_channels(spec, rec);
        let (c, bytes) = liger::gla_chunk(spec, rec, self.opts.chunk, self.opts.smem_limit);
        let has_window = !matches!(window, WindowIn::None);
        let out_src = match window {
            WindowIn::Fused { .. } => liger::fused_prefill(spec, c),
            _ => liger::gla_prefill(spec, rec, c, normalizer, has_window),
        };
        let sub_src = liger::gla_prefill_subchunk(spec, rec, c, normalizer, has_window);
        self.check_smem(&out_src.name, bytes.max(out_src.smem as usize))?;
        let (b, kvx, seq) = (self.batch(), Extent::from(kv), Arg::Scalar(Scalar::Seq));
        let nch = self.seq().ceil_div(c as u64);
        let states = Arg::Buffer(self.pool.alloc(
            DType::F32,
            vec![b, kvx, nch, Extent::from(dk), Extent::from(d)],
        ));
        let dec = Arg::Buffer(
            self.pool
                .alloc(DType::F32, vec![b, kvx, nch, Extent::from(dk)]),
        );
        let tiles = match liger::key_and_state_pass(spec, rec, c, normalizer) {
            Some(srcs) => Some(self.key_and_state_pass(
                spec,
                srcs,
                (nodes, layer, c),
                [&k, &v, &state, &states, &dec],
            )?),
            None => {
                self.states_and_scan(
                    (spec, rec, normalizer),
                    (nodes, layer, c),
                    [&k, &v, &state, &states, &dec],
                )?;
                None
            }
        };
        let mut tail = Vec::new();
        if let Some(t) = &tiles {
            tail.push(t.slow.clone());
        }
        match &window {
            WindowIn::None => {}
            WindowIn::Part(part) => tail.push(part.clone()),
            // the sub-chunk kernel adds to the fused kernel's window part, in place
            WindowIn::Fused { .. } => tail.push(out.clone()),
        }
        tail.extend([out.clone(), seq.clone()]);
        let grid = [nch, Extent::from(liger::gla_prefill_heads(spec, rec, c)), b];
        // the tensor-core kernels: the one-product kernel from the key pass's tiles and the
        // bf16 states, the sub-chunk kernel (the chunks the first one leaves, disjoint rows)
        // from the raw keys and the f32 states
        let first = match (&tiles, &window) {
            (
                Some(t),
                WindowIn::Fused {
                    ops: [q_rot, k_rot, ring_k, ring_v],
                },
            ) => vec![
                qs.clone(),
                q_rot.clone(),
                k_rot.clone(),
                v.clone(),
                ring_k.clone(),
                ring_v.clone(),
                t.kmap.clone(),
                t.ebuf.clone(),
                t.states_bf.clone(),
                t.slow.clone(),
                out.clone(),
                seq,
                Arg::Scalar(Scalar::Pos0),
            ],
            (None, WindowIn::Fused { .. }) => {
                return Err(CudaError::Shape {
                    node: format!("layer {layer}"),
                    problem: "internal: the fused window kernel without the key pass".into(),
                });
            }
            (Some(t), _) => vec![
                qs.clone(),
                t.kmap.clone(),
                t.ebuf.clone(),
                v.clone(),
                t.states_bf.clone(),
            ],
            (None, _) => vec![qs.clone(), k.clone(), v.clone(), states.clone()],
        };
        let first: Vec<Arg> = if matches!(window, WindowIn::Fused { .. }) {
            first
        } else {
            first.into_iter().chain(tail.iter().cloned()).collect()
        };
        let at_out = first
            .iter()
            .rposition(|a| a.name().is_some() && a.name() == out.name())
            .unwrap_or(first.len() - 2);
        self.launch(out_src, nodes, grid, first, &[at_out], Some(layer));
        if let Some(src) = sub_src {
            let args: Vec<Arg> = [qs, k, v, states.clone()].into_iter().chain(tail).collect();
            let at_out = args.len() - 2;
            self.launch(src, nodes, grid, args, &[at_out], Some(layer));
        }
        self.release(&states);
        if let Some(t) = &tiles {
            for a in [&t.states_bf, &t.kmap, &t.ebuf, &t.slow] {
                self.release(a);
            }
        }
        self.release(&dec);
        Ok(())
    }

    /// Steps 1 and 2 of the tensor-core variants: the key pass, then one sequential pass over
    /// the chunks per state slice. Writes `dec` and the f32 `states` of slow chunks; returns
    /// what step 3's one-product kernel reads. `io` = (k, v, state, states, dec).
    fn key_and_state_pass(
        &mut self,
        spec: &LigerSpec,
        [prep_src, pass_src]: [super::KernelSrc; 2],
        (nodes, layer, c): (&[NodeId], usize, usize),
        [k, v, state, states, dec]: [&Arg; 5],
    ) -> Result<KeyPassTiles, CudaError> {
        self.check_smem(&prep_src.name, prep_src.smem as usize)?;
        self.check_smem(&pass_src.name, pass_src.smem as usize)?;
        let (b, kvx, d) = (self.batch(), Extent::from(spec.kv_heads), spec.head_dim);
        let nch = self.seq().ceil_div(c as u64);
        let seq = Arg::Scalar(Scalar::Seq);
        let mut per_chunk = |dt: DType, rows: usize| {
            Arg::Buffer(
                self.pool
                    .alloc(dt, vec![b, kvx, nch, Extent::from(rows), Extent::from(d)]),
            )
        };
        let khat = per_chunk(DType::BF16, 2 * c);
        let kmap = per_chunk(DType::BF16, c);
        let ebuf = per_chunk(DType::BF16, c);
        let slow = Arg::Buffer(self.pool.alloc(DType::I32, vec![b, kvx, nch]));
        let states_bf = Arg::Buffer(self.pool.alloc(
            DType::BF16,
            vec![b, kvx, nch, Extent::from(d), Extent::from(d)],
        ));
        self.launch(
            prep_src,
            nodes,
            [nch, kvx, b],
            vec![
                k.clone(),
                kmap.clone(),
                ebuf.clone(),
                khat.clone(),
                dec.clone(),
                slow.clone(),
                seq.clone(),
            ],
            &[1, 2, 3, 4, 5],
            Some(layer),
        );
        self.launch(
            pass_src,
            nodes,
            [Extent::from(liger::state_pass_slices(spec)), kvx, b],
            vec![
                kmap.clone(),
                khat.clone(),
                v.clone(),
                dec.clone(),
                slow.clone(),
                state.clone(),
                states_bf.clone(),
                states.clone(),
                seq,
            ],
            &[5, 6, 7],
            Some(layer),
        );
        self.release(&khat);
        Ok(KeyPassTiles {
            states_bf,
            kmap,
            ebuf,
            slow,
        })
    }

    /// Steps 1 and 2 on CUDA cores: each chunk's contribution and decay into `states` and
    /// `dec`, then the scan that turns the contributions into the states entering the
    /// chunks. `io` = (k, v, state, states, dec).
    fn states_and_scan(
        &mut self,
        (spec, rec, normalizer): (&LigerSpec, Recurrence, f64),
        (nodes, layer, c): (&[NodeId], usize, usize),
        [k, v, state, states, dec]: [&Arg; 5],
    ) -> Result<(), CudaError> {
        let states_src = liger::gla_chunk_states(spec, rec, c, normalizer);
        let scan_src = liger::gla_state_scan(spec, rec, c);
        self.check_smem(&states_src.name, states_src.smem as usize)?;
        let (b, kv, d) = (self.batch(), spec.kv_heads, spec.head_dim);
        let dk = liger::key_channels(spec, rec);
        let nch = self.seq().ceil_div(c as u64);
        let seq = Arg::Scalar(Scalar::Seq);
        let scan_blocks = b
            .times((kv * dk * d) as u64)
            .ceil_div(u64::from(scan_src.block[0]));
        self.launch(
            states_src,
            nodes,
            [nch, Extent::from(kv), b],
            vec![
                k.clone(),
                v.clone(),
                states.clone(),
                dec.clone(),
                seq.clone(),
            ],
            &[2, 3],
            Some(layer),
        );
        self.launch(
            scan_src,
            nodes,
            [scan_blocks, Extent::fixed(1), Extent::fixed(1)],
            vec![
                state.clone(),
                states.clone(),
                dec.clone(),
                Arg::Scalar(Scalar::Batch),
                seq,
            ],
            &[0, 1],
            Some(layer),
        );
        Ok(())
    }
}
