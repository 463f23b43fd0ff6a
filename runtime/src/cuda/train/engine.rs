//! [`CudaBackend`]: the parameters, AdamW moments and gradient accumulators
//! as flat f32 device buffers, the frozen weights, and a training step on the
//! GPU. Per micro-batch the host reads back one scalar (`loss_sum`); per
//! update one more (the squared gradient norm, which also decides a
//! non-finite update); clipping and AdamW run on the device.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use ligerc_codegen::cuda::kernels::train_basic::REDUCE_BLOCKS;
use ligerc_ir::Graph;

use super::super::{Device, DeviceBuffer};
use super::GpuTrainError;
use super::forward::Ctx;
use super::graph::GpuGraph;
use super::host::{download_bytes, download_f32, upload, upload_bf16};
use super::kernels::{Kernels, double, float, long, ptr};
use super::value::{DevTensor, Elem, Pool};
use crate::Tensor;
use crate::train::{
    AdamW, FrozenDtype, Moments, Param, StepBackend, TrainError, projection_only_weights,
};

/// Where each trainable tensor lives in the flat buffers.
struct Slot {
    name: String,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// Training and evaluation graphs on one GPU.
pub struct CudaBackend {
    dev: Device,
    kernels: Kernels,
    pool: Pool,
    rope: RefCell<HashMap<String, (DevTensor, DevTensor)>>,
    liger: super::liger::LigerCache,
    /// bf16 tensor-core attention kernels with bf16 frozen weights.
    math: super::TrainMath,
    train: GpuGraph,
    eval: GpuGraph,
    host_ops: bool,
    weights: HashMap<String, DevTensor>,
    slots: Vec<Slot>,
    total: usize,
    params: DeviceBuffer,
    grads: DeviceBuffer,
    m: DeviceBuffer,
    v: DeviceBuffer,
    partials: DeviceBuffer,
    norm: DeviceBuffer,
}

impl CudaBackend {
    /// Opens GPU 0, compiles the kernels, uploads the frozen weights (bf16 or
    /// f32 by `frozen`: see [`FrozenDtype`]) and
    /// allocates the flat parameter, moment and gradient buffers for
    /// `trainable` (in the order the training graph returns their gradients).
    /// No GPU or library: `CudaError::Unavailable`. An op without a GPU kernel
    /// is refused naming the node, unless `LIGERC_TRAIN_HOST_OPS=1`.
    pub fn new(
        train: Graph,
        eval: Graph,
        trainable: &[String],
        frozen: FrozenDtype,
    ) -> Result<CudaBackend, GpuTrainError> {
        let math = super::train_math(frozen)?;
        let dev = Device::open(0)?;
        let host_ops = super::host_ops_allowed();
        let train = GpuGraph::new(train, host_ops)?;
        let eval = GpuGraph::new(eval, host_ops)?;
        let kernels = Kernels::load(&dev)?;
        let pool = Pool::default();
        let mut slots = Vec::new();
        let mut total = 0usize;
        for name in trainable {
            let w = train
                .graph()
                .weights
                .get(name)
                .ok_or_else(|| GpuTrainError::Shape {
                    node: format!("weight `{name}`"),
                    problem: "trainable weight is not in the graph".into(),
                })?;
            let len = w.numel();
            slots.push(Slot {
                name: name.clone(),
                shape: w.shape().to_vec(),
                offset: total,
                len,
            });
            total += len;
        }
        let bytes = total.max(1) * 4;
        let (params, grads, m, v) = (
            dev.alloc(bytes)?,
            dev.alloc(bytes)?,
            dev.alloc(bytes)?,
            dev.alloc(bytes)?,
        );
        let partials = dev.alloc(REDUCE_BLOCKS as usize * 8)?;
        let norm = dev.alloc(8)?;
        let bf16 = match frozen {
            FrozenDtype::Bf16 => projection_only_weights(&[train.graph(), eval.graph()], trainable),
            FrozenDtype::F32 => HashSet::new(),
        };
        let mut weights = HashMap::new();
        for g in [train.graph(), eval.graph()] {
            for (name, data) in &g.weights {
                if weights.contains_key(name) || trainable.contains(name) {
                    continue;
                }
                let host = Tensor::from_data(data);
                let t = if bf16.contains(name) {
                    upload_bf16(&dev, &pool, &host)?
                } else {
                    upload(&dev, &pool, &host)?
                };
                weights.insert(name.clone(), t);
            }
        }
        for s in &slots {
            weights.insert(
                s.name.clone(),
                DevTensor {
                    ptr: params.ptr + 4 * s.offset as u64,
                    shape: s.shape.clone(),
                    elem: Elem::F32,
                    hold: None,
                },
            );
        }
        Ok(CudaBackend {
            dev,
            kernels,
            pool,
            rope: RefCell::new(HashMap::new()),
            liger: super::liger::LigerCache::default(),
            math,
            train,
            eval,
            host_ops,
            weights,
            slots,
            total,
            params,
            grads,
            m,
            v,
            partials,
            norm,
        })
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// Whether the kernels came from the cubin cache.
    pub fn kernels_cached(&self) -> bool {
        self.kernels.cached
    }

    /// Nodes run on the host per run, by op (empty unless `LIGERC_TRAIN_HOST_OPS=1`).
    pub fn host_nodes(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .train
            .host_nodes
            .borrow()
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Runs the training graph and returns its outputs on the host, without
    /// touching the accumulators (the gradient check of `ligerc grad-check`).
    pub fn run_train_graph(
        &mut self,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<Vec<Tensor>, GpuTrainError> {
        let out = self.run(true, inputs)?;
        out.iter()
            .map(|t| super::host::download(&self.dev, t))
            .collect()
    }

    fn run(
        &self,
        training: bool,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<Vec<DevTensor>, GpuTrainError> {
        let graph = if training { &self.train } else { &self.eval };
        let dev_inputs = inputs
            .iter()
            .map(|(k, t)| Ok((k.clone(), upload(&self.dev, &self.pool, t)?)))
            .collect::<Result<HashMap<_, _>, GpuTrainError>>()?;
        let mut cx = Ctx {
            dev: &self.dev,
            k: &self.kernels,
            pool: &self.pool,
            rope: &self.rope,
            liger: &self.liger,
            node: String::new(),
            math: self.math,
            saved: Default::default(),
            keep_saved: training,
            saved_as: None,
        };
        graph.run(&mut cx, &self.weights, &dev_inputs, self.host_ops)
    }

    fn scalar(&self, t: &DevTensor) -> Result<f32, GpuTrainError> {
        Ok(download_f32(&self.dev, t)?
            .first()
            .copied()
            .unwrap_or(f32::NAN))
    }

    fn flat_upload(&self, buf: &DeviceBuffer, parts: &[&[f32]]) -> Result<(), GpuTrainError> {
        let bytes: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.iter())
            .flat_map(|x| x.to_le_bytes())
            .collect();
        self.dev.upload(buf, &bytes)?;
        Ok(())
    }

    fn flat_download(&self, buf: &DeviceBuffer) -> Result<Vec<f32>, GpuTrainError> {
        let b = download_bytes(&self.dev, buf.ptr, self.total * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

impl StepBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn load_params(&mut self, params: &[Param]) -> Result<(), TrainError> {
        if params.len() != self.slots.len()
            || params
                .iter()
                .zip(&self.slots)
                .any(|(p, s)| p.name != s.name || p.value.len() != s.len)
        {
            return Err(TrainError::Config(
                "the parameters do not match the GPU backend's trainable tensors".into(),
            ));
        }
        let vals: Vec<&[f32]> = params.iter().map(|p| p.value.as_slice()).collect();
        let ms: Vec<&[f32]> = params.iter().map(|p| p.moments.m.as_slice()).collect();
        let vs: Vec<&[f32]> = params.iter().map(|p| p.moments.v.as_slice()).collect();
        self.flat_upload(&self.params, &vals)?;
        self.flat_upload(&self.m, &ms)?;
        self.flat_upload(&self.v, &vs)?;
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<Param>, TrainError> {
        let (p, m, v) = (
            self.flat_download(&self.params)?,
            self.flat_download(&self.m)?,
            self.flat_download(&self.v)?,
        );
        Ok(self
            .slots
            .iter()
            .map(|s| {
                let r = s.offset..s.offset + s.len;
                Param {
                    name: s.name.clone(),
                    shape: s.shape.clone(),
                    value: p[r.clone()].to_vec(),
                    moments: Moments {
                        m: m[r.clone()].to_vec(),
                        v: v[r].to_vec(),
                    },
                }
            })
            .collect())
    }

    fn zero_grads(&mut self) -> Result<(), TrainError> {
        self.dev.memset0(&self.grads).map_err(GpuTrainError::from)?;
        Ok(())
    }

    fn accumulate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32, TrainError> {
        let out = self.run(true, inputs)?;
        if out.len() != 2 + self.slots.len() {
            return Err(TrainError::Config(format!(
                "the training graph returned {} outputs for {} trainable tensors",
                out.len(),
                self.slots.len()
            )));
        }
        for (s, g) in self.slots.iter().zip(&out[2..]) {
            if g.numel() != s.len || g.elem != Elem::F32 {
                return Err(TrainError::Config(format!(
                    "gradient of `{}` has {} elements, the parameter {}",
                    s.name,
                    g.numel(),
                    s.len
                )));
            }
            self.kernels.elems(
                &self.dev,
                "tr_accumulate",
                s.len,
                &[
                    ptr(self.grads.ptr + 4 * s.offset as u64),
                    ptr(g.ptr),
                    long(s.len as i64),
                ],
            )?;
        }
        Ok(self.scalar(&out[0])?)
    }

    fn grad_norm(&mut self) -> Result<f64, TrainError> {
        self.kernels.blocks(
            &self.dev,
            "tr_sumsq_partial",
            REDUCE_BLOCKS,
            &[
                ptr(self.grads.ptr),
                long(self.total as i64),
                ptr(self.partials.ptr),
            ],
        )?;
        self.kernels.blocks(
            &self.dev,
            "tr_sum_partials",
            1,
            &[
                ptr(self.partials.ptr),
                super::kernels::int(REDUCE_BLOCKS as usize),
                ptr(self.norm.ptr),
            ],
        )?;
        let b = download_bytes(&self.dev, self.norm.ptr, 8)?;
        let sum = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        Ok(sum.sqrt())
    }

    fn apply(
        &mut self,
        adamw: &AdamW,
        lr: f64,
        step: u64,
        clip_scale: Option<f32>,
    ) -> Result<(), TrainError> {
        let (b1, b2) = (adamw.beta1, adamw.beta2);
        let c1 = 1.0 - b1.powf(step as f64);
        let c2 = 1.0 - b2.powf(step as f64);
        let decay = (1.0 - lr * adamw.weight_decay) as f32;
        self.kernels.elems(
            &self.dev,
            "tr_adamw",
            self.total,
            &[
                ptr(self.params.ptr),
                ptr(self.grads.ptr),
                ptr(self.m.ptr),
                ptr(self.v.ptr),
                long(self.total as i64),
                float(clip_scale.unwrap_or(1.0)),
                double(lr),
                double(b1),
                double(b2),
                double(adamw.eps),
                float(decay),
                double(c1),
                double(c2),
            ],
        )?;
        Ok(())
    }

    fn evaluate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<(f32, f32), TrainError> {
        let out = self.run(false, inputs)?;
        let (Some(sum), Some(count)) = (out.first(), out.get(1)) else {
            return Err(TrainError::Config(
                "the evaluation graph did not return `loss_sum` and `loss_tokens`".into(),
            ));
        };
        Ok((self.scalar(sum)?, self.scalar(count)?))
    }

    fn grads(&mut self) -> Result<Vec<Vec<f32>>, TrainError> {
        let g = self.flat_download(&self.grads)?;
        Ok(self
            .slots
            .iter()
            .map(|s| g[s.offset..s.offset + s.len].to_vec())
            .collect())
    }

    fn peak_memory(&self) -> Option<usize> {
        Some(self.dev.allocated().1)
    }
}
