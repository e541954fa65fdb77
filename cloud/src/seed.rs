//! The well-known development seed, like the storage emulator's well-known account.

use crate::auth::{self, PERM_READ, RESOURCE, ROLE_GA};
use crate::error::CloudError;
use crate::store::{Application, ResourceAccess, SecretMeta, Store, Tenant, User};
use std::sync::OnceLock;

/// The password of every seeded user.
pub const DEV_PASSWORD: &str = "cloudattach-dev";
/// The secret of the seeded read-only apps.
pub const DEV_SECRET: &str = "cloudattach-dev-secret";
/// Tenant id of contoso.example.
pub const CONTOSO_TENANT_ID: &str = "c0257050-0000-4000-8000-000000000001";
/// Tenant id of fabrikam.example.
pub const FABRIKAM_TENANT_ID: &str = "fab41ca3-0000-4000-8000-000000000002";
/// Read-only app of contoso.example.
pub const CONTOSO_READER_APP_ID: &str = "00000000-0000-4000-8000-00000000c0de";
/// Read-only app of fabrikam.example.
pub const FABRIKAM_READER_APP_ID: &str = "00000000-0000-4000-8000-00000000fab0";

/// A seeded tenant, as printed at start.
#[derive(Debug, Clone)]
pub struct SeededTenant {
    /// Domain.
    pub domain: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Read-only app client id.
    pub reader_app_id: String,
}

const SEED: [(&str, &str, &str, &str); 2] = [
    (
        "Contoso",
        "contoso.example",
        CONTOSO_TENANT_ID,
        CONTOSO_READER_APP_ID,
    ),
    (
        "Fabrikam",
        "fabrikam.example",
        FABRIKAM_TENANT_ID,
        FABRIKAM_READER_APP_ID,
    ),
];

/// One Argon2 hash of the well-known password per process (the password is public; hashing it
/// once keeps start-up fast in tests while every stored value is still a salted slow hash).
fn dev_password_hash() -> String {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| auth::hash_password(DEV_PASSWORD)).clone()
}

/// Seeds the development tenants, users and read-only apps into `store`.
pub fn seed(store: &dyn Store) -> Result<(), CloudError> {
    let now = crate::util::now_rfc3339();
    for (name, domain, tid, reader) in SEED {
        store.create_tenant(&Tenant {
            id: tid.into(),
            display_name: name.into(),
            domains: vec![domain.into()],
            use_intune_rbac: false,
        })?;
        for (local, roles, lic) in [
            ("admin", vec![ROLE_GA.to_string()], true),
            ("nolicense", vec![ROLE_GA.to_string()], false),
            ("user", vec![], false),
        ] {
            store.create_user(&User {
                id: crate::util::uuid(),
                tenant_id: tid.into(),
                upn: format!("{local}@{domain}"),
                password_hash: dev_password_hash(),
                roles,
                intune_license: lic,
            })?;
        }
        let app = Application {
            id: crate::util::uuid(),
            tenant_id: tid.into(),
            app_id: reader.into(),
            display_name: "cloudattach read-only (development)".into(),
            identifier_uris: vec![],
            required_resource_access: vec![ResourceAccess {
                resource: RESOURCE.into(),
                permissions: vec![PERM_READ.into()],
            }],
            admin_consent: true,
            created: now.clone(),
            secrets: vec![],
        };
        store.create_application(&app)?;
        store.add_secret(
            &app.id,
            &SecretMeta {
                key_id: crate::util::uuid(),
                display_name: Some("well-known development secret".into()),
                hint: DEV_SECRET[..3].into(),
                start_date_time: now.clone(),
                end_date_time: "2099-12-31T23:59:59Z".into(),
            },
            &auth::hash_secret(DEV_SECRET),
        )?;
        store.create_service_principal(
            tid,
            &crate::store::ServicePrincipal {
                id: crate::util::uuid(),
                app_id: reader.into(),
                display_name: app.display_name.clone(),
            },
        )?;
    }
    Ok(())
}

/// The seeded tenants present in the store.
pub fn present(store: &dyn Store) -> Result<Vec<SeededTenant>, CloudError> {
    let mut v = Vec::new();
    for (_, domain, tid, reader) in SEED {
        if store.find_tenant(tid)?.is_some() {
            v.push(SeededTenant {
                domain: domain.into(),
                tenant_id: tid.into(),
                reader_app_id: reader.into(),
            });
        }
    }
    Ok(v)
}

/// The start-up banner listing the development accounts.
pub fn describe(seeded: &[SeededTenant]) -> String {
    if seeded.is_empty() {
        return "no development accounts (the data dir was created with --no-seed)\n".into();
    }
    let mut s = String::from(
        "well-known development accounts (password of every user: cloudattach-dev):\n",
    );
    for t in seeded {
        s.push_str(&format!(
            "  tenant {} (id {})\n    admin@{d} (Global Administrator, Intune license)\n    \
             nolicense@{d} (Global Administrator, no Intune license)\n    user@{d} (no admin role)\n    \
             read-only app {} secret {DEV_SECRET}\n",
            t.domain,
            t.tenant_id,
            t.reader_app_id,
            d = t.domain
        ));
    }
    s.push_str(&format!(
        "  CLI public client id {}\n",
        auth::PUBLIC_CLIENT_ID
    ));
    s
}
