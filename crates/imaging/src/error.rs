//! The one error type of this crate, sorted into the few kinds a caller acts on.
//!
//! Where it sits in the data path: every failure between the uploaded bytes and the encoded
//! result ends here. A caller branches on the [`ErrorKind`] (the HTTP service picks its
//! status from it) and shows [`ImageError`]'s message to the person who uploaded the file,
//! so each message says what was wrong in their terms: which limit, how large the image
//! actually is, which formats are accepted.

/// What went wrong, coarsely: what a caller branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes claim to be a supported format but cannot be decoded: empty, truncated,
    /// damaged, or describing an impossible image (0×0).
    Corrupt,
    /// Not a format (or a variant of one) that can be read or written.
    Unsupported,
    /// The image exceeds a configured [`Limits`](crate::Limits) value, or a size the output
    /// format can hold.
    TooLarge,
    /// Not the input's fault: an [`Image`](crate::Image) whose buffers disagree with its
    /// dimensions, or an encoder failure.
    Internal,
}

/// A failure to decode, encode or resample an image, with a message meant for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ImageError {
    kind: ErrorKind,
    message: String,
}

impl ImageError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ImageError {
            kind,
            message: message.into(),
        }
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message() {
        let e = ImageError::too_large("too wide");
        assert_eq!(e.to_string(), "too wide");
        assert_eq!(e.kind(), ErrorKind::TooLarge);
    }
}
