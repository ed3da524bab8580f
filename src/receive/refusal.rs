//! Why the receiver refuses a request. Each refusal classifies itself: the DIMSE status
//! it is answered with, whether the peer may retry (the node's own trouble) or will be
//! refused again (the object's), and the comment the peer reads; the same words go to
//! the audit trail.

use crate::dicom::{DimseStatus, UidError, pixel::PixelMismatch};
use crate::series::MetaError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    // The node's trouble: the peer may retry.
    #[error("spool disk below its free-space watermark")]
    DiskLow,
    #[error("cannot check spool free space: {0}")]
    FreeSpaceUnknown(std::io::Error),
    #[error("node could not store the instance")]
    CannotStore,
    #[error("data set larger than max_object_mb")]
    TooLarge,
    // The object's trouble: it will be refused again.
    #[error(
        "deflated data set inflates beyond {0} bytes, the bound for its size (a decompression bomb?)"
    )]
    InflatesBeyond(u64),
    #[error("SOP class {0} does not match the presentation context")]
    ContextMismatch(String),
    #[error("Affected SOP Instance UID: {0}")]
    BadInstanceUid(UidError),
    #[error("cannot inflate the deflated data set: {0}")]
    Inflate(std::io::Error),
    #[error("malformed data set: {0}")]
    Malformed(String),
    #[error("cannot parse data set: {0}")]
    Unparsable(String),
    #[error("image has no Pixel Data (data set truncated?)")]
    NoPixelData,
    #[error(transparent)]
    Pixels(PixelMismatch),
    #[error(
        "SOP class/instance does not match what it was sent as (C-STORE request or file meta information): data set has {class}/{instance}"
    )]
    RequestMismatch { class: String, instance: String },
    #[error("instance of study {0}, sent to another study")]
    OtherStudy(String),
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(String),
    #[error("transfer syntax {0} is not supported")]
    TransferSyntax(String),
    #[error(transparent)]
    Attributes(MetaError),
    #[error("C-ECHO without the Verification SOP Class")]
    EchoWithoutVerification,
    #[error("operation not supported")]
    UnsupportedOperation,
}

impl Refusal {
    /// The status the response carries (PS3.4 B.2.3, PS3.7 C). Only the node's trouble
    /// is Refused: Out of Resources (A7xx), the failure a sender retries. A data set that
    /// inflates far beyond its size is the object's: it will inflate as far next time,
    /// so it is an Error: Cannot Understand (C000), which a sender does not retry, with
    /// the reason in the Error Comment. (A9xx, Data Set Does Not Match SOP Class, would
    /// say something about its attributes that nobody has read.) One that inflates
    /// beyond `max_object_mb` within that bound is [`Refusal::TooLarge`], as when sent
    /// uncompressed.
    pub(super) fn status(&self) -> DimseStatus {
        use Refusal::*;
        match self {
            DiskLow | FreeSpaceUnknown(_) | CannotStore | TooLarge => DimseStatus::OUT_OF_RESOURCES,
            ContextMismatch(_) | RequestMismatch { .. } | OtherStudy(_) => {
                DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS
            }
            BadInstanceUid(_) | InflatesBeyond(_) | Inflate(_) | Malformed(_) | Unparsable(_)
            | NoPixelData | Attributes(_) | NotPart10(_) => DimseStatus::CANNOT_UNDERSTAND,
            TransferSyntax(_) => DimseStatus::TRANSFER_SYNTAX_NOT_SUPPORTED,
            Pixels(mismatch) => mismatch.dimse_status(),
            EchoWithoutVerification => DimseStatus::SOP_CLASS_NOT_SUPPORTED,
            UnsupportedOperation => DimseStatus::UNRECOGNIZED_OPERATION,
        }
    }

    /// Whether sending the same object again may succeed.
    pub(super) fn retryable(&self) -> bool {
        self.status().is_out_of_resources()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_trouble_is_retryable_the_objects_is_not() {
        assert!(Refusal::DiskLow.retryable());
        assert!(Refusal::TooLarge.retryable());
        assert!(!Refusal::InflatesBeyond(16).retryable());
        assert_eq!(
            Refusal::InflatesBeyond(16).status(),
            DimseStatus::CANNOT_UNDERSTAND
        );
        let bits = Refusal::Pixels(PixelMismatch::BitsStored {
            stored: 17,
            allocated: 16,
        });
        assert_eq!(bits.status(), DimseStatus::CANNOT_UNDERSTAND);
        assert!(!bits.retryable());
        assert!(!Refusal::NoPixelData.retryable());
        assert_eq!(
            Refusal::NoPixelData.status(),
            DimseStatus::CANNOT_UNDERSTAND
        );
        let colour = Refusal::Pixels(PixelMismatch::NotMonochrome("RGB".into()));
        assert_eq!(
            colour.status(),
            DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS
        );
        assert!(colour.to_string().contains("\"RGB\""));
        assert_eq!(
            Refusal::UnsupportedOperation.status(),
            DimseStatus::UNRECOGNIZED_OPERATION
        );
    }
}
