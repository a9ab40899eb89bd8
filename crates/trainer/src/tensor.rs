//! The one place where ndarray and tch meet: glassbox-data's batches become tensors here, and
//! tensors come back as ndarray for metrics, indicators and pictures. Both directions copy once.

use glassbox_data::Batch;
use ndarray::{Array2, Array3, ArrayD, ArrayView3, Ix2, Ix3};
use tch::{Device, Kind, Tensor};

/// A batch on the training device: normalised RGB B x 3 x H x W, depth B x H x W (metres, 0 where
/// invalid), validity B x H x W (bool), class ids B x H x W (i64, 255 = ignore) when the source
/// has labels, and the sample names.
#[derive(Debug)]
pub struct TensorBatch {
    pub rgb: Tensor,
    pub depth: Tensor,
    pub mask: Tensor,
    pub labels: Option<Tensor>,
    pub names: Vec<String>,
}

impl TensorBatch {
    /// Copies an ndarray batch onto `device`.
    pub fn new(batch: &Batch, device: Device) -> Self {
        let dims = |shape: &[usize]| shape.iter().map(|&s| s as i64).collect::<Vec<_>>();
        let rgb = Tensor::from_slice(standard(batch.rgb.as_slice()))
            .view(dims(batch.rgb.shape()).as_slice());
        let depth = Tensor::from_slice(standard(batch.depth.as_slice()))
            .view(dims(batch.depth.shape()).as_slice());
        let mask: Vec<u8> = batch.mask.iter().map(|&m| u8::from(m)).collect();
        let mask = Tensor::from_slice(&mask)
            .view(dims(batch.mask.shape()).as_slice())
            .to_kind(Kind::Bool);
        let labels = batch
            .labels
            .as_ref()
            .map(|l| Tensor::from_slice(standard(l.as_slice())).view(dims(l.shape()).as_slice()));
        Self {
            rgb: rgb.to_device(device),
            depth: depth.to_device(device),
            mask: mask.to_device(device),
            labels: labels.map(|l| l.to_device(device)),
            names: batch.names.clone(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True for a batch without images.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The first `n` images (all when the batch is smaller).
    pub fn first(&self, n: usize) -> Self {
        let n = n.min(self.len()) as i64;
        Self {
            rgb: self.rgb.narrow(0, 0, n),
            depth: self.depth.narrow(0, 0, n),
            mask: self.mask.narrow(0, 0, n),
            labels: self.labels.as_ref().map(|l| l.narrow(0, 0, n)),
            names: self.names[..n as usize].to_vec(),
        }
    }
}

/// The loader builds every array in standard layout; anything else is a bug, not an input error.
fn standard<T>(slice: Option<&[T]>) -> &[T] {
    slice.expect("glassbox-data batches are in standard layout")
}

/// A CPU f32 copy of any tensor (detached, converted, contiguous).
pub fn to_array(t: &Tensor) -> ArrayD<f32> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let values = Vec::<f32>::try_from(&t.reshape([-1])).expect("a float tensor converts to f32");
    ArrayD::from_shape_vec(shape, values).expect("one value per element")
}

/// [`to_array`] of an H x W tensor.
pub fn to_array2(t: &Tensor) -> Array2<f32> {
    to_array(t)
        .into_dimensionality::<Ix2>()
        .expect("a two-dimensional tensor")
}

/// [`to_array`] of a C x H x W tensor.
pub fn to_array3(t: &Tensor) -> Array3<f32> {
    to_array(t)
        .into_dimensionality::<Ix3>()
        .expect("a three-dimensional tensor")
}

/// An H x W tensor of class ids (predicted argmax or labels) as a CPU i64 array.
pub fn to_class_map(t: &Tensor) -> Array2<i64> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Int64)
        .contiguous();
    let shape = t.size();
    let values = Vec::<i64>::try_from(&t.reshape([-1])).expect("an integer tensor converts");
    Array2::from_shape_vec((shape[0] as usize, shape[1] as usize), values)
        .expect("a two-dimensional tensor")
}

/// A C x H x W array as a 1 x C x H x W tensor on `device`.
pub fn image_tensor(rgb: ArrayView3<f32>, device: Device) -> Tensor {
    let (c, h, w) = rgb.dim();
    let owned = rgb.as_standard_layout();
    Tensor::from_slice(standard(owned.as_slice()))
        .view([1, c as i64, h as i64, w as i64])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Array4};

    #[test]
    fn a_batch_round_trips_through_tensors() {
        let rgb = Array4::from_shape_fn((2, 3, 4, 5), |(b, c, y, x)| {
            (b * 100 + c * 20 + y * 5 + x) as f32
        });
        let batch = Batch {
            rgb: rgb.clone(),
            depth: Array3::from_elem((2, 4, 5), 1.5),
            mask: Array3::from_shape_fn((2, 4, 5), |(_, y, _)| y > 1),
            labels: Some(Array3::from_elem((2, 4, 5), 3)),
            indices: vec![7, 9],
            names: vec!["a".into(), "b".into()],
        };
        let t = TensorBatch::new(&batch, Device::Cpu);
        assert_eq!(t.rgb.size(), [2, 3, 4, 5]);
        assert_eq!(
            to_array3(&t.rgb.get(1)),
            rgb.index_axis(ndarray::Axis(0), 1)
        );
        assert_eq!(t.mask.kind(), Kind::Bool);
        assert_eq!(i64::try_from(t.mask.sum(Kind::Int64)).unwrap(), 2 * 2 * 5);
        assert_eq!(t.labels.as_ref().unwrap().kind(), Kind::Int64);
        assert_eq!(t.first(1).names, ["a"]);
        let back = image_tensor(rgb.index_axis(ndarray::Axis(0), 0), Device::Cpu);
        assert!(back.get(0).equal(&t.rgb.get(0)));
    }
}
