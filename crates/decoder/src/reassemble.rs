//! Reassemble_s = Resample_s o Concatenate o Read (DPT paper, eq. 2-4; `docs/architecture.md`): turns one
//! hooked token sequence B x (1 + h*w) x D into an image-like map B x C_i x (f h) x (f w).
//!
//! Variable names mirror HF `DPTReassembleStage`: `readout_projects.{i}.0.*` (the Linear inside HF's
//! `Sequential(Linear, GELU)`), `layers.{i}.projection.*` (1x1 conv D -> C_i) and `layers.{i}.resize.*`
//! (absent for factor 1, where HF has an `Identity`).

use tch::{Tensor, nn, nn::Module};

use crate::config::{Readout, Resampling};

/// Read: folds the readout token t_0 into the patch tokens t_1..t_N.
#[derive(Debug)]
pub(crate) enum Read {
    Ignore,
    Add,
    Project(nn::Linear),
}

impl Read {
    /// `vs` is the stage's `readout_projects.{i}` path; only `Project` creates variables.
    pub(crate) fn new(vs: &nn::Path, readout: Readout, hidden_size: i64) -> Self {
        match readout {
            Readout::Ignore => Self::Ignore,
            Readout::Add => Self::Add,
            Readout::Project => Self::Project(nn::linear(
                vs / "0",
                2 * hidden_size,
                hidden_size,
                Default::default(),
            )),
        }
    }

    /// Tokens B x (1 + N) x D (readout first) to patch tokens B x N x D.
    pub(crate) fn forward(&self, tokens: &Tensor) -> Tensor {
        let readout = tokens.narrow(1, 0, 1);
        let patches = tokens.narrow(1, 1, tokens.size()[1] - 1);
        match self {
            Self::Ignore => patches,
            Self::Add => patches + readout,
            Self::Project(linear) => {
                let readout = readout.expand_as(&patches);
                linear
                    .forward(&Tensor::cat(&[&patches, &readout], -1))
                    .gelu("none")
            }
        }
    }
}

/// Concatenate: patch tokens B x (h*w) x D, row-major over the grid, to a map B x D x h x w.
///
/// The map is a channels-last view of the tokens (no copy; HF copies to NCHW here). Every later
/// decoder op keeps that layout, and oneDNN's channels-last convolutions and the channels-last
/// bilinear upsampling skip the NCHW <-> blocked reorders and their page-faulted buffers, which were
/// most of dpt-tiny's decoder time (docs/performance.md, "DPT end to end vs PyTorch").
pub(crate) fn concatenate(patches: &Tensor, (h, w): (i64, i64)) -> Tensor {
    let (b, _, d) = patches.size3().expect("Read returns rank-3 tokens");
    patches.reshape([b, h, w, d]).permute([0, 3, 1, 2])
}

/// Resample: 1x1 projection D -> C_i, then the factor's up- or down-sampling.
#[derive(Debug)]
pub(crate) struct Resample {
    projection: nn::Conv2D,
    resize: Resize,
}

#[derive(Debug)]
enum Resize {
    Identity,
    Up(nn::ConvTranspose2D),
    Down(nn::Conv2D),
}

impl Resample {
    /// `vs` is the stage's `layers.{i}` path.
    pub(crate) fn new(
        vs: &nn::Path,
        hidden_size: i64,
        channels: i64,
        resampling: Resampling,
    ) -> Self {
        let projection = nn::conv2d(
            vs / "projection",
            hidden_size,
            channels,
            1,
            Default::default(),
        );
        let resize = match resampling {
            Resampling::Identity => Resize::Identity,
            Resampling::Up(f) => Resize::Up(nn::conv_transpose2d(
                vs / "resize",
                channels,
                channels,
                f,
                nn::ConvTransposeConfig {
                    stride: f,
                    ..Default::default()
                },
            )),
            Resampling::Down(s) => Resize::Down(nn::conv2d(
                vs / "resize",
                channels,
                channels,
                3,
                nn::ConvConfig {
                    stride: s,
                    padding: 1,
                    ..Default::default()
                },
            )),
        };
        Self { projection, resize }
    }

    pub(crate) fn forward(&self, map: &Tensor) -> Tensor {
        let x = self.projection.forward(map);
        match &self.resize {
            Resize::Identity => x,
            Resize::Up(conv) => conv.forward(&x),
            Resize::Down(conv) => conv.forward(&x),
        }
    }
}

/// One Reassemble_s stage: Read, Concatenate, Resample.
#[derive(Debug)]
pub(crate) struct Reassemble {
    read: Read,
    resample: Resample,
}

impl Reassemble {
    /// `stage_vs` is `neck.reassemble_stage`; `i` the stage index.
    pub(crate) fn new(
        stage_vs: &nn::Path,
        i: usize,
        readout: Readout,
        hidden_size: i64,
        channels: i64,
        resampling: Resampling,
    ) -> Self {
        Self {
            read: Read::new(&(stage_vs / "readout_projects" / i), readout, hidden_size),
            resample: Resample::new(
                &(stage_vs / "layers" / i),
                hidden_size,
                channels,
                resampling,
            ),
        }
    }

    /// Tokens B x (1 + h*w) x D (already validated) to B x C_i x h' x w'.
    pub(crate) fn forward(&self, tokens: &Tensor, grid: (i64, i64)) -> Tensor {
        self.resample
            .forward(&concatenate(&self.read.forward(tokens), grid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn::VarStore};

    fn tokens(b: i64, n: i64, d: i64) -> Tensor {
        Tensor::randn([b, n, d], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn read_ignore_drops_the_readout_token() {
        let vs = VarStore::new(Device::Cpu);
        let t = tokens(2, 7, 4);
        let out = Read::new(&vs.root(), Readout::Ignore, 4).forward(&t);
        assert_eq!(out.size(), [2, 6, 4]);
        assert!(out.equal(&t.narrow(1, 1, 6)));
        assert!(vs.variables().is_empty());
    }

    #[test]
    fn read_add_adds_the_readout_token_to_every_patch() {
        let vs = VarStore::new(Device::Cpu);
        let t = tokens(2, 7, 4);
        let out = Read::new(&vs.root(), Readout::Add, 4).forward(&t);
        let expected = t.narrow(1, 1, 6) + t.narrow(1, 0, 1);
        assert!(out.allclose(&expected, 0.0, 0.0, false));
    }

    #[test]
    fn read_project_is_gelu_of_a_linear_map_of_token_then_readout() {
        let vs = VarStore::new(Device::Cpu);
        let t = tokens(1, 3, 2);
        let read = Read::new(&vs.root(), Readout::Project, 2);
        let Read::Project(linear) = &read else {
            panic!("project readout builds a Linear")
        };
        let (w, b) = (&linear.ws, linear.bs.as_ref().unwrap());
        let out = read.forward(&t);
        for i in 1..3 {
            let cat = Tensor::cat(&[t.get(0).get(i), t.get(0).get(0)], 0);
            let expected = (w.matmul(&cat) + b).gelu("none");
            assert!(out.get(0).get(i - 1).allclose(&expected, 1e-6, 1e-6, false));
        }
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"0.weight".to_string()) && names.contains(&"0.bias".to_string()));
    }

    #[test]
    fn concatenate_lays_tokens_out_row_major_over_a_non_square_grid() {
        let patches = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([1, 6, 1]);
        let map = concatenate(&patches, (2, 3));
        assert_eq!(map.size(), [1, 1, 2, 3]);
        assert_eq!(map.double_value(&[0, 0, 1, 0]), 3.0);
        assert_eq!(map.double_value(&[0, 0, 0, 2]), 2.0);
    }

    #[test]
    fn concatenate_gives_a_channels_last_view_without_copying() {
        let patches = Tensor::randn([2, 6, 4], (Kind::Float, Device::Cpu));
        let map = concatenate(&patches, (2, 3));
        assert_eq!(map.stride(), [24, 1, 12, 4]);
        assert_eq!(map.data_ptr(), patches.data_ptr());
    }

    #[test]
    fn resample_scales_the_grid_by_each_factor() {
        let cases = [
            (Resampling::Up(4), (3, 5), (12, 20)),
            (Resampling::Up(2), (3, 5), (6, 10)),
            (Resampling::Identity, (3, 5), (3, 5)),
            (Resampling::Down(2), (3, 5), (2, 3)),
            (Resampling::Down(2), (4, 6), (2, 3)),
        ];
        for (resampling, (h, w), (oh, ow)) in cases {
            let vs = VarStore::new(Device::Cpu);
            let resample = Resample::new(&vs.root(), 8, 5, resampling);
            let out = resample.forward(&Tensor::randn([2, 8, h, w], (Kind::Float, Device::Cpu)));
            assert_eq!(out.size(), [2, 5, oh, ow], "{resampling:?}");
            let has_resize = vs.variables().keys().any(|k| k.starts_with("resize."));
            assert_eq!(has_resize, resampling != Resampling::Identity);
        }
    }
}
