//! The scheduler step on the GPU (kernels/lincomb/): elementwise linear combinations of flat f32 vectors, which is
//! what a scheduler step program ([`program`]) is made of, and the UNet's input preparation.
//!
//! - [`LinComb`]: one `dst = clamp(Σ coef · src)` with a fixed set of bindings (dst, a guided CFG pair, up to
//!   [`MAX_SOURCES`] f32 sources, each at an element offset) and its coefficients in a persistent uniform buffer,
//!   rewritten with a queue write before each run, so that one dispatch serves every step;
//! - [`ScaleInput`]: the UNet's CFG input `[2B, …]` = `s · X` in both halves (f32 or f16);
//! - [`StepProgram`]: runs a scheduler's programs on GPU tensors: it owns the history vectors (allocated once) and
//!   keeps one [`LinComb`] per (op position, UNet output, op shape), so that a step creates no buffer, bind group
//!   or pipeline once every shape of op has been seen (PNDM has four, DDIM one or two).
//!
//! wgpu forbids binding one buffer read_write and read-only in one dispatch: dst's own term is read through its
//! read_write binding (`dst_term`), and a source may not live in dst's buffer.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Dispatch, Gpu, Kernel, grid_1d};
pub mod program;

use crate::tensor::{DType, Tensor};
pub use program::{Dst, LinOp, Slot, Term};

use super::elementwise::WG;
use super::{typed, u32_of};

/// Most f32 sources one [`LinComb`] reads besides dst's own term and the guided pair (`S1..S6` in the kernel).
pub const MAX_SOURCES: usize = 6;

/// Mirrors `LinParams` in kernels/lincomb/lincomb.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct LinParams {
    pub n: u32,
    pub dst_off: u32,
    /// Bit 0: dst is a term (`cd`); bit 1: clamp to `[-r, r]`.
    pub flags: u32,
    pub _pad0: u32,
    /// Element offsets of the guided pair's unconditional and conditional halves.
    pub gu: u32,
    pub gc: u32,
    pub _pad1: [u32; 2],
    pub cd: f32,
    pub cg: f32,
    pub guidance: f32,
    pub r: f32,
    /// Element offsets of sources 1..6 (two vec4s).
    pub off: [u32; 8],
    /// Coefficients of sources 1..6.
    pub coef: [f32; 8],
}

/// Mirrors `PrepParams` in kernels/lincomb/prep.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PrepParams {
    pub n: u32,
    pub half: u32,
    pub s: f32,
    pub _pad0: u32,
}

const FLAG_DST_TERM: u32 = 1;
const FLAG_CLAMP: u32 = 2;

/// The linear-combination kernel: dst of `dst` type, a guided pair of `guided` type (None: no pair), `sources` f32
/// sources.
pub fn lincomb_kernel(dst: DType, guided: Option<DType>, sources: usize) -> Kernel {
    let mut k =
        typed("lincomb/lincomb.wgsl", dst).flag("GUIDED", guided.is_some()).flag("G_F16", guided == Some(DType::F16));
    for s in 1..=sources.min(MAX_SOURCES) {
        k = k.flag(&format!("S{s}"), true);
    }
    k
}

/// The input-preparation kernel writing a `dst`-typed UNet input.
pub fn prep_kernel(dst: DType) -> Kernel {
    typed("lincomb/prep.wgsl", dst)
}

/// Every variant, for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for dt in [DType::F32, DType::F16] {
        v.push(prep_kernel(dt));
        for g in [None, Some(DType::F32), Some(DType::F16)] {
            for s in 0..=MAX_SOURCES {
                v.push(lincomb_kernel(dt, g, s));
            }
        }
    }
    v
}

/// A flat vector `t[offset..offset + len]` (t's shape is ignored).
#[derive(Clone, Copy, Debug)]
pub struct Src<'a> {
    pub t: &'a Tensor,
    pub offset: usize,
}

impl<'a> Src<'a> {
    pub fn new(t: &'a Tensor, offset: usize) -> Src<'a> {
        Src { t, offset }
    }
}

/// The guided output of a classifier-free-guidance batch: `U + g·(C − U)` with `U = t[uncond + i]`,
/// `C = t[cond + i]` (f32 or f16; typically the UNet output `[2B, …]` with `uncond = 0`, `cond = B·plane`).
#[derive(Clone, Copy, Debug)]
pub struct Guided<'a> {
    pub t: &'a Tensor,
    pub uncond: usize,
    pub cond: usize,
}

/// What a [`LinComb`] reads and writes, fixed when it is built.
#[derive(Clone, Debug)]
pub struct LinLayout<'a> {
    /// Written: `len` elements from `dst.offset` (f32, or f16 e.g. when it is a UNet input).
    pub dst: Src<'a>,
    pub len: usize,
    /// dst is also a term (read before it is written, element by element).
    pub dst_term: bool,
    pub guided: Option<Guided<'a>>,
    /// f32 sources, at most [`MAX_SOURCES`]; none may live in dst's buffer.
    pub sources: Vec<Src<'a>>,
}

/// The coefficients of one run of a [`LinComb`] (`dst` is ignored without `dst_term`, `guided` and `guidance`
/// without a guided pair).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinCoefs {
    pub dst: f64,
    pub guided: f64,
    pub guidance: f64,
    /// One per source, in the layout's order.
    pub sources: Vec<f64>,
    /// Clamp the sum to `[-r, r]`.
    pub clamp: Option<f64>,
}

fn in_range(op: &str, what: &str, t: &Tensor, offset: usize, len: usize) -> Result<()> {
    if offset + len > t.numel() {
        return Err(Error::shape(op, format!("{what}: elements {offset}..{} of a {:?} tensor", offset + len, t.shape)));
    }
    Ok(())
}

fn f32_of(op: &str, what: &str, v: f64) -> Result<f32> {
    let f = v as f32;
    if !f.is_finite() {
        return Err(Error::msg(format!("{op}: {what} = {v} is not a finite f32")));
    }
    Ok(f)
}

fn uniform_buffer(gpu: &Gpu, op: &str, size: usize) -> Result<wgpu::Buffer> {
    gpu.scoped(op, || {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: size as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

/// One linear combination, ready to run again and again with new coefficients.
pub struct LinComb {
    dispatch: Dispatch,
    params: wgpu::Buffer,
    base: LinParams,
    sources: usize,
    guided: bool,
    dst_term: bool,
}

impl LinComb {
    /// Checks `l` and builds its dispatch and uniform buffer (coefficients zero until [`LinComb::set`]).
    pub fn new(gpu: &Gpu, l: &LinLayout) -> Result<LinComb> {
        let op = "lincomb";
        let dt = l.dst.t.dtype;
        if dt == DType::U32 {
            return Err(Error::shape(op, "dst is a u32 tensor"));
        }
        in_range(op, "dst", l.dst.t, l.dst.offset, l.len)?;
        if l.sources.len() > MAX_SOURCES {
            return Err(Error::shape(op, format!("{} sources, at most {MAX_SOURCES}", l.sources.len())));
        }
        let alias = |t: &Tensor| t.buffer() == l.dst.t.buffer();
        for (k, s) in l.sources.iter().enumerate() {
            s.t.expect(op, &format!("source {k}"), &s.t.shape, DType::F32)?;
            in_range(op, &format!("source {k}"), s.t, s.offset, l.len)?;
            if alias(s.t) {
                return Err(Error::shape(
                    op,
                    format!("source {k} shares dst's buffer; pass dst's own term as dst_term"),
                ));
            }
        }
        let mut base = LinParams {
            n: u32_of(op, "elements", l.len)?,
            dst_off: u32_of(op, "dst offset", l.dst.offset)?,
            flags: if l.dst_term { FLAG_DST_TERM } else { 0 },
            ..Default::default()
        };
        if let Some(g) = &l.guided {
            if g.t.dtype == DType::U32 {
                return Err(Error::shape(op, "the guided pair is a u32 tensor"));
            }
            in_range(op, "guided uncond", g.t, g.uncond, l.len)?;
            in_range(op, "guided cond", g.t, g.cond, l.len)?;
            if alias(g.t) {
                return Err(Error::shape(op, "the guided pair shares dst's buffer"));
            }
            base.gu = u32_of(op, "guided offset", g.uncond)?;
            base.gc = u32_of(op, "guided offset", g.cond)?;
        }
        for (k, s) in l.sources.iter().enumerate() {
            base.off[k] = u32_of(op, "source offset", s.offset)?;
        }
        let params = uniform_buffer(gpu, op, std::mem::size_of::<LinParams>())?;
        let kernel = lincomb_kernel(dt, l.guided.as_ref().map(|g| g.t.dtype), l.sources.len());
        let mut binds = vec![(0, Bind::T(l.dst.t)), (1, Bind::Buffer(&params))];
        if let Some(g) = &l.guided {
            binds.push((2, Bind::T(g.t)));
        }
        for (k, s) in l.sources.iter().enumerate() {
            binds.push((3 + k as u32, Bind::T(s.t)));
        }
        let dispatch = gpu.dispatch(op, &kernel, &binds, grid_1d(base.n.div_ceil(WG)))?;
        let lc = LinComb {
            dispatch,
            params,
            base,
            sources: l.sources.len(),
            guided: l.guided.is_some(),
            dst_term: l.dst_term,
        };
        lc.write(gpu, &base)?;
        Ok(lc)
    }

    fn write(&self, gpu: &Gpu, p: &LinParams) -> Result<()> {
        gpu.scoped("lincomb coefficients", || gpu.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(p)))
    }

    /// Writes the coefficients of the next runs (a queue write: it lands before the next submission).
    pub fn set(&self, gpu: &Gpu, c: &LinCoefs) -> Result<()> {
        let op = "lincomb";
        if c.sources.len() != self.sources {
            return Err(Error::shape(op, format!("{} coefficients for {} sources", c.sources.len(), self.sources)));
        }
        let mut p = self.base;
        if self.dst_term {
            p.cd = f32_of(op, "dst coefficient", c.dst)?;
        }
        if self.guided {
            p.cg = f32_of(op, "guided coefficient", c.guided)?;
            p.guidance = f32_of(op, "guidance", c.guidance)?;
        }
        for (k, &v) in c.sources.iter().enumerate() {
            p.coef[k] = f32_of(op, "coefficient", v)?;
        }
        if let Some(r) = c.clamp {
            p.flags |= FLAG_CLAMP;
            p.r = f32_of(op, "clamp", r)?;
        }
        self.write(gpu, &p)
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// The UNet's input from the f32 sample `x`: `dst = s · x` repeated over dst (dst holds a whole number of copies:
/// both halves of the CFG batch), f32 or f16.
pub struct ScaleInput {
    dispatch: Dispatch,
    params: wgpu::Buffer,
    base: PrepParams,
}

impl ScaleInput {
    /// Builds the dispatch (scale 1 until [`ScaleInput::set`]).
    pub fn new(gpu: &Gpu, x: &Tensor, dst: &Tensor) -> Result<ScaleInput> {
        let op = "scale input";
        x.expect(op, "x", &x.shape, DType::F32)?;
        if dst.dtype == DType::U32 {
            return Err(Error::shape(op, "dst is a u32 tensor"));
        }
        let (n, half) = (dst.numel(), x.numel());
        if half == 0 || !n.is_multiple_of(half) {
            return Err(Error::shape(op, format!("dst {:?} is not a whole number of x {:?}", dst.shape, x.shape)));
        }
        let base = PrepParams { n: u32_of(op, "elements", n)?, half: half as u32, s: 1.0, _pad0: 0 };
        let params = uniform_buffer(gpu, op, std::mem::size_of::<PrepParams>())?;
        let binds = [(0, Bind::T(x)), (1, Bind::T(dst)), (2, Bind::Buffer(&params))];
        let dispatch = gpu.dispatch(op, &prep_kernel(dst.dtype), &binds, grid_1d(base.n.div_ceil(WG)))?;
        let si = ScaleInput { dispatch, params, base };
        si.set(gpu, 1.0)?;
        Ok(si)
    }

    /// Writes the scale of the next runs.
    pub fn set(&self, gpu: &Gpu, s: f64) -> Result<()> {
        let p = PrepParams { s: f32_of("scale input", "scale", s)?, ..self.base };
        gpu.scoped("scale input", || gpu.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&p)))
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// The shape of one op of a step program: what a cached [`LinComb`] was built for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OpShape {
    position: usize,
    output: usize,
    dst: Dst,
    dst_term: bool,
    guided: bool,
    sources: Vec<Slot>,
}

/// Runs scheduler step programs on GPU tensors: the sample `x` (f32 `[B, …]`), the UNet outputs it may read
/// (`[2B, …]`, uncond then cond; `Slot::Out` is their guided combination; `[B, …]` without classifier-free guidance,
/// only with guidance 1) and the history vectors it owns.
pub struct StepProgram {
    x: Tensor,
    outputs: Vec<Tensor>,
    hist: Vec<Tensor>,
    guidance: f64,
    cache: Vec<(OpShape, LinComb)>,
    /// Indices into `cache` of the loaded program's ops, in order.
    current: Vec<usize>,
}

impl StepProgram {
    /// `history` zero-filled f32 vectors of x's size are allocated here, once.
    pub fn new(gpu: &Gpu, x: &Tensor, outputs: &[&Tensor], guidance: f64, history: usize) -> Result<StepProgram> {
        let op = "step program";
        x.expect(op, "x", &x.shape, DType::F32)?;
        let n = x.numel();
        for (k, o) in outputs.iter().enumerate() {
            if o.numel() != 2 * n && !(o.numel() == n && guidance == 1.0) {
                return Err(Error::shape(
                    op,
                    format!("UNet output {k} {:?} is not the CFG batch of x {:?}", o.shape, x.shape),
                ));
            }
        }
        let zeros = vec![0.0f32; n];
        let hist =
            (0..history).map(|_| Tensor::from_f32(gpu, &x.shape, DType::F32, &zeros)).collect::<Result<Vec<_>>>()?;
        Ok(StepProgram {
            x: x.clone(),
            outputs: outputs.iter().map(|&t| t.clone()).collect(),
            hist,
            guidance,
            cache: Vec::new(),
            current: Vec::new(),
        })
    }

    /// History vector `k`.
    pub fn hist(&self, k: usize) -> Option<&Tensor> {
        self.hist.get(k)
    }

    fn vector(&self, op: &str, s: Slot) -> Result<&Tensor> {
        match s {
            Slot::X => Ok(&self.x),
            Slot::Hist(k) => self.hist.get(k).ok_or_else(|| {
                Error::msg(format!("{op}: history slot {k} used, the scheduler declared {}", self.hist.len()))
            }),
            Slot::Out => Err(Error::msg(format!("{op}: the model output is not a plain vector"))),
        }
    }

    /// Makes `ops` the program that [`StepProgram::dispatches`] runs, reading UNet output `output`, and writes
    /// their coefficients. A new op shape builds its dispatch (once); otherwise only uniforms are written.
    pub fn load(&mut self, gpu: &Gpu, output: usize, ops: &[LinOp]) -> Result<()> {
        let op = "step program";
        let out = self.outputs.get(output).ok_or_else(|| Error::msg(format!("{op}: no UNet output {output}")))?;
        let n = self.x.numel();
        self.current.clear();
        for (position, lin) in ops.iter().enumerate() {
            // Merge the terms: dst's own, the guided output, and the other vectors in order of appearance.
            let (mut cd, mut cg, mut dst_term, mut guided) = (0.0, 0.0, false, false);
            let mut sources: Vec<(Slot, f64)> = Vec::new();
            for t in &lin.terms {
                if t.src == lin.dst.slot() {
                    cd += t.coef;
                    dst_term = true;
                } else if t.src == Slot::Out {
                    cg += t.coef;
                    guided = true;
                } else {
                    match sources.iter_mut().find(|(s, _)| *s == t.src) {
                        Some((_, c)) => *c += t.coef,
                        None => sources.push((t.src, t.coef)),
                    }
                }
            }
            if sources.len() > MAX_SOURCES {
                return Err(Error::msg(format!(
                    "{op}: op {position} reads {} vectors besides its destination and the model output; the GPU \
                     step takes at most {MAX_SOURCES}",
                    sources.len()
                )));
            }
            let shape = OpShape {
                position,
                output,
                dst: lin.dst,
                dst_term,
                guided,
                sources: sources.iter().map(|s| s.0).collect(),
            };
            let idx = match self.cache.iter().position(|(s, _)| *s == shape) {
                Some(i) => i,
                None => {
                    let dst = self.vector(op, lin.dst.slot())?;
                    let srcs =
                        shape.sources.iter().map(|&s| Ok(Src::new(self.vector(op, s)?, 0))).collect::<Result<_>>()?;
                    let layout = LinLayout {
                        dst: Src::new(dst, 0),
                        len: n,
                        dst_term,
                        // Without CFG (guidance 1, output [B, …]) the pair is the output twice: U + 1·(C − U)
                        // with U = C is exactly C.
                        guided: guided.then_some(Guided { t: out, uncond: 0, cond: out.numel() - n }),
                        sources: srcs,
                    };
                    let lc = LinComb::new(gpu, &layout)?;
                    self.cache.push((shape, lc));
                    self.cache.len() - 1
                }
            };
            let coefs = LinCoefs {
                dst: cd,
                guided: cg,
                guidance: self.guidance,
                sources: sources.iter().map(|s| s.1).collect(),
                clamp: lin.clamp,
            };
            self.cache[idx].1.set(gpu, &coefs)?;
            self.current.push(idx);
        }
        Ok(())
    }

    /// The dispatches of the loaded program, in order.
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.current.iter().map(|&i| self.cache[i].1.dispatch())
    }

    /// Distinct op shapes built so far (each has its dispatch and uniform buffer).
    pub fn built(&self) -> usize {
        self.cache.len()
    }
}
