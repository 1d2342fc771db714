//! Host-side tensors: the data behind the WIT `tensor` resource, and its conversion to and from ONNX Runtime.

use std::sync::Arc;

use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

/// Element types the host can hold. `Fp16`/`Bf16` are accepted by the contract but not built yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementType {
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    U8,
    I8,
    I32,
    I64,
    Bool,
}

impl ElementType {
    /// The WIT contract's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp16 => "fp16",
            Self::Fp32 => "fp32",
            Self::Fp64 => "fp64",
            Self::Bf16 => "bf16",
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::Bool => "boolean",
        }
    }

    /// NumPy's `descr` of the type (little-endian); bf16 has none, so it is stored as raw 2-byte values.
    pub fn npy_descr(self) -> &'static str {
        match self {
            Self::Fp16 => "<f2",
            Self::Fp32 => "<f4",
            Self::Fp64 => "<f8",
            Self::Bf16 => "<V2",
            Self::U8 => "|u1",
            Self::I8 => "|i1",
            Self::I32 => "<i4",
            Self::I64 => "<i8",
            Self::Bool => "|b1",
        }
    }

    pub fn from_npy_descr(descr: &str) -> Option<Self> {
        const ALL: [ElementType; 9] = [
            ElementType::Fp16,
            ElementType::Fp32,
            ElementType::Fp64,
            ElementType::Bf16,
            ElementType::U8,
            ElementType::I8,
            ElementType::I32,
            ElementType::I64,
            ElementType::Bool,
        ];
        ALL.into_iter().find(|t| t.npy_descr() == descr)
    }

    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::Fp16 | Self::Bf16 => 2,
            Self::Fp32 | Self::I32 => 4,
            Self::Fp64 | Self::I64 => 8,
        }
    }

    pub fn from_ort(ty: TensorElementType) -> Option<Self> {
        Some(match ty {
            TensorElementType::Float16 => Self::Fp16,
            TensorElementType::Float32 => Self::Fp32,
            TensorElementType::Float64 => Self::Fp64,
            TensorElementType::Bfloat16 => Self::Bf16,
            TensorElementType::Uint8 => Self::U8,
            TensorElementType::Int8 => Self::I8,
            TensorElementType::Int32 => Self::I32,
            TensorElementType::Int64 => Self::I64,
            TensorElementType::Bool => Self::Bool,
            _ => return None,
        })
    }
}

/// Why a tensor could not be built or converted.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("tensor of shape {dims:?} and type {ty:?} needs {expected} bytes, got {actual}")]
    LengthMismatch { dims: Vec<u32>, ty: ElementType, expected: usize, actual: usize },
    #[error("tensor of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("element type {0:?} is not supported by this host yet")]
    Unsupported(ElementType),
    #[error("output `{name}` is not a tensor of a supported element type ({ty})")]
    UnsupportedOutput { name: String, ty: String },
    #[error("ONNX Runtime rejected the tensor")]
    Ort(#[source] ort::Error),
}

/// A dense little-endian tensor. Cloning is cheap: the bytes are shared.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub ty: ElementType,
    pub dims: Vec<u32>,
    pub data: Arc<[u8]>,
}

impl Tensor {
    /// Builds a tensor after checking that `data` matches `dims` and `ty`.
    pub fn new(dims: Vec<u32>, ty: ElementType, data: Vec<u8>, limit: usize) -> Result<Self, TensorError> {
        if data.len() > limit {
            return Err(TensorError::TooLarge { bytes: data.len(), limit });
        }
        let elements = dims.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d as usize));
        let expected = elements.and_then(|n| n.checked_mul(ty.size())).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(TensorError::LengthMismatch { dims, ty, expected, actual: data.len() });
        }
        Ok(Self { ty, dims, data: data.into() })
    }

    fn shape(&self) -> Vec<i64> {
        self.dims.iter().map(|&d| i64::from(d)).collect()
    }

    /// Converts to an ONNX Runtime value (one copy, into ORT's own allocation).
    pub fn to_ort(&self) -> Result<DynValue, TensorError> {
        fn build<T, const N: usize>(
            shape: Vec<i64>,
            data: &[u8],
            decode: fn([u8; N]) -> T,
        ) -> Result<DynValue, TensorError>
        where
            T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
        {
            let values: Vec<T> = data
                .chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    decode(b)
                })
                .collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(TensorError::Ort)
        }
        let shape = self.shape();
        match self.ty {
            ElementType::Fp32 => build(shape, &self.data, f32::from_le_bytes),
            ElementType::Fp64 => build(shape, &self.data, f64::from_le_bytes),
            ElementType::I64 => build(shape, &self.data, i64::from_le_bytes),
            ElementType::I32 => build(shape, &self.data, i32::from_le_bytes),
            ElementType::U8 => build(shape, &self.data, |b: [u8; 1]| b[0]),
            ElementType::I8 => build(shape, &self.data, i8::from_le_bytes),
            ElementType::Bool => build(shape, &self.data, |b: [u8; 1]| b[0] != 0),
            ty @ (ElementType::Fp16 | ElementType::Bf16) => Err(TensorError::Unsupported(ty)),
        }
    }

    /// Copies an ONNX Runtime output into a host tensor.
    pub fn from_ort(name: &str, value: &DynValue) -> Result<Self, TensorError> {
        fn copy<T: ort::value::PrimitiveTensorElementType + Copy, const N: usize>(
            value: &DynValue,
            encode: fn(T) -> [u8; N],
        ) -> Result<(Vec<u32>, Vec<u8>), TensorError> {
            let (shape, data) = value.try_extract_tensor::<T>().map_err(TensorError::Ort)?;
            let dims = shape.iter().map(|&d| d.max(0) as u32).collect();
            // A zeroed buffer filled in fixed-size chunks compiles to a plain copy; pushing element by element
            // costs milliseconds on a recogniser's 15 MB output.
            let mut bytes = vec![0u8; data.len() * N];
            for (out, v) in bytes.chunks_exact_mut(N).zip(data) {
                out.copy_from_slice(&encode(*v));
            }
            Ok((dims, bytes))
        }
        let unsupported = || TensorError::UnsupportedOutput { name: name.to_string(), ty: format!("{:?}", value.dtype()) };
        let ty = match value.dtype() {
            ValueType::Tensor { ty, .. } => ElementType::from_ort(*ty).ok_or_else(unsupported)?,
            _ => return Err(unsupported()),
        };
        let (dims, bytes) = match ty {
            ElementType::Fp32 => copy(value, f32::to_le_bytes)?,
            ElementType::Fp64 => copy(value, f64::to_le_bytes)?,
            ElementType::I64 => copy(value, i64::to_le_bytes)?,
            ElementType::I32 => copy(value, i32::to_le_bytes)?,
            ElementType::U8 => copy(value, |v: u8| [v])?,
            ElementType::I8 => copy(value, i8::to_le_bytes)?,
            ElementType::Bool => copy(value, |v: bool| [u8::from(v)])?,
            ElementType::Fp16 | ElementType::Bf16 => return Err(unsupported()),
        };
        Ok(Self { ty, dims, data: bytes.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_data_that_does_not_match_the_shape() {
        let err = Tensor::new(vec![2, 3], ElementType::Fp32, vec![0; 20], 1 << 20).unwrap_err();
        assert!(matches!(err, TensorError::LengthMismatch { expected: 24, actual: 20, .. }), "{err}");
    }

    #[test]
    fn rejects_tensors_over_the_limit() {
        let err = Tensor::new(vec![1024], ElementType::I64, vec![0; 8192], 4096).unwrap_err();
        assert!(matches!(err, TensorError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn overflowing_dimensions_are_a_mismatch_not_a_panic() {
        let err = Tensor::new(vec![u32::MAX, u32::MAX, u32::MAX], ElementType::I64, vec![0; 8], 1 << 20).unwrap_err();
        assert!(matches!(err, TensorError::LengthMismatch { .. }), "{err}");
    }
}
