//! A dense `f32` tensor in row-major order: constants inside the IR and images between the
//! pipeline and a backend (`[H, W, C]`).

/// A dense row-major `f32` tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of the given shape from its row-major data.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (a programming error, not an input error).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data length does not match shape {shape:?}"
        );
        Tensor { shape, data }
    }

    /// A tensor filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar(v: f32) -> Self {
        Tensor {
            shape: vec![],
            data: vec![v],
        }
    }

    /// An image-shaped `[H, W, C]` tensor.
    pub fn image(h: usize, w: usize, c: usize, data: Vec<f32>) -> Self {
        Self::new(vec![h, w, c], data)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The single value of a tensor with one element (a scalar or `[1]`, `[1,1]`, ...).
    pub fn as_scalar(&self) -> Option<f32> {
        (self.data.len() == 1).then(|| self.data[0])
    }

    /// `(height, width, channels)` of an image tensor.
    pub fn hwc(&self) -> Option<(usize, usize, usize)> {
        match self.shape[..] {
            [h, w, c] => Some((h, w, c)),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)?;
        if self.data.len() <= 8 {
            write!(f, "{:?}", self.data)?;
        }
        Ok(())
    }
}
