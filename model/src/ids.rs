//! Identifiers with one rule for everyone: feature (plugin) ids, which the core's registry and
//! the cloud's gateway both check, and collection ids, which the manifests' option kinds and
//! the gateway's feature settings both check.

use std::fmt;

/// The shortest feature id, in characters.
pub const FEATURE_ID_MIN_LEN: usize = 2;

/// The longest feature id, in characters.
pub const FEATURE_ID_MAX_LEN: usize = 64;

/// The characters of a feature id: a lowercase letter, then lowercase letters, digits and `-`,
/// 2 to 64 in all. A feature id also must not end with `-` ([`validate_feature_id`]).
pub const FEATURE_ID_PATTERN: &str = "^[a-z][a-z0-9-]{1,63}$";

/// Why a feature id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureIdError {
    /// It does not match [`FEATURE_ID_PATTERN`].
    Pattern,
    /// It ends with `-`.
    TrailingHyphen,
}

impl fmt::Display for FeatureIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureIdError::Pattern => write!(f, "must match {FEATURE_ID_PATTERN}"),
            FeatureIdError::TrailingHyphen => f.write_str("must not end with '-'"),
        }
    }
}

impl std::error::Error for FeatureIdError {}

/// The rule for a feature id (a plugin's id, its `[features.<id>]` table, its cloud feature and
/// its upload channel `ext/<id>`): kebab-case, [`FEATURE_ID_PATTERN`], not ending with `-`.
///
/// ```
/// use cloudattach_model::{FeatureIdError, validate_feature_id};
/// assert_eq!(validate_feature_id("collection-summary"), Ok(()));
/// assert_eq!(validate_feature_id("x"), Err(FeatureIdError::Pattern));
/// assert_eq!(validate_feature_id("Tenant"), Err(FeatureIdError::Pattern));
/// assert_eq!(validate_feature_id("inventory-"), Err(FeatureIdError::TrailingHyphen));
/// ```
pub fn validate_feature_id(id: &str) -> Result<(), FeatureIdError> {
    let b = id.as_bytes();
    let pattern = (FEATURE_ID_MIN_LEN..=FEATURE_ID_MAX_LEN).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !pattern {
        Err(FeatureIdError::Pattern)
    } else if id.ends_with('-') {
        Err(FeatureIdError::TrailingHyphen)
    } else {
        Ok(())
    }
}

/// Whether `id` passes [`validate_feature_id`].
pub fn is_valid_feature_id(id: &str) -> bool {
    validate_feature_id(id).is_ok()
}

/// The length of a collection id.
pub const COLLECTION_ID_LEN: usize = 8;

/// The length of a site code, the first part of a collection id.
pub const SITE_CODE_LEN: usize = 3;

/// A collection id: a 3-character site code (letters or digits) followed by 5 hexadecimal
/// digits (e.g. "PS100012", "SMS00001"), as Configuration Manager numbers collections. The
/// manifests' collection options and the cloud's feature settings apply this one rule.
///
/// ```
/// use cloudattach_model::is_collection_id;
/// assert!(is_collection_id("PS100012") && is_collection_id("SMS00001"));
/// assert!(!is_collection_id("PS1000ZZ") && !is_collection_id("PS10001"));
/// ```
pub fn is_collection_id(s: &str) -> bool {
    // Bytes, not `str` slices: a non-ASCII string of 8 bytes must not panic at a char boundary.
    let b = s.as_bytes();
    b.len() == COLLECTION_ID_LEN
        && b[..SITE_CODE_LEN].iter().all(u8::is_ascii_alphanumeric)
        && b[SITE_CODE_LEN..].iter().all(u8::is_ascii_hexdigit)
}
