//! Encoding of stored records (postcard: compact and deterministic).

use serde::{Serialize, de::DeserializeOwned};

use crate::StoreError;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding a record to memory cannot fail")
}

/// Appends `value`'s encoding to `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    postcard::to_io(value, out).expect("encoding a record to memory cannot fail");
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// A stored transaction, shared: the writer, the overlay and the answer hold one copy.
pub(crate) fn decode_transaction(
    bytes: &[u8],
) -> Result<std::sync::Arc<coffer_core::Transaction>, StoreError> {
    decode("transaction", bytes).map(std::sync::Arc::new)
}
