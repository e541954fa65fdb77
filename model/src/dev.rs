//! The development seed's well-known identities: the tenants `cloudattach cloud serve` creates
//! on an empty data dir, and the rule that gives each seeded user a deterministic Entra object
//! id, so that a development site's files (a directory of discovered users, administrative
//! users) can name them before the cloud ever ran.
//!
//! Public knowledge, like the storage emulator's well-known account: never use them for
//! anything real.

/// Tenant id of `contoso.example`.
pub const CONTOSO_TENANT_ID: &str = "c0257050-0000-4000-8000-000000000001";
/// Tenant id of `fabrikam.example`.
pub const FABRIKAM_TENANT_ID: &str = "fab41ca3-0000-4000-8000-000000000002";
/// The domain of the contoso tenant.
pub const CONTOSO_DOMAIN: &str = "contoso.example";
/// The domain of the fabrikam tenant.
pub const FABRIKAM_DOMAIN: &str = "fabrikam.example";

/// The local parts of the seeded users of every seeded tenant, in the order of their object
/// ids (`admin` is …000000000001, `cloudonly` …000000000006).
pub const SEEDED_USERS: [&str; 6] = [
    "admin",
    "nolicense",
    "user",
    "helpdesk",
    "readonly",
    "cloudonly",
];

/// The object id the development seed gives the user `local@<domain of tenant_id>`: the first
/// 8 hexadecimal digits of the tenant id, then `-0000-4000-9000-` and 12 digits numbering the
/// user (admin 1, nolicense 2, user 3, helpdesk 4, readonly 5, cloudonly 6). `None` for any
/// other local part, or a tenant id that does not start with 8 hexadecimal digits.
///
/// ```
/// use cloudattach_model::dev::{CONTOSO_TENANT_ID, seeded_user_object_id};
/// assert_eq!(
///     seeded_user_object_id(CONTOSO_TENANT_ID, "helpdesk").as_deref(),
///     Some("c0257050-0000-4000-9000-000000000004")
/// );
/// assert_eq!(seeded_user_object_id(CONTOSO_TENANT_ID, "someone"), None);
/// ```
pub fn seeded_user_object_id(tenant_id: &str, local: &str) -> Option<String> {
    let n = SEEDED_USERS.iter().position(|u| *u == local)? + 1;
    let prefix = tenant_id.get(..8)?;
    if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-0000-4000-9000-{n:012}",
        prefix.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seeded_user_has_a_distinct_id_per_tenant() {
        let mut seen = std::collections::HashSet::new();
        for t in [CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID] {
            for u in SEEDED_USERS {
                assert!(seen.insert(seeded_user_object_id(t, u).unwrap()));
            }
        }
        assert_eq!(
            seeded_user_object_id(FABRIKAM_TENANT_ID, "admin").as_deref(),
            Some("fab41ca3-0000-4000-9000-000000000001")
        );
        assert_eq!(seeded_user_object_id("nothex!!-x", "admin"), None);
    }
}
