//! The well-known development seed, like the storage emulator's well-known account.

use crate::auth::{self, PERM_READ, RESOURCE, ROLE_GA};
use crate::error::CloudError;
use crate::store::{Application, ResourceAccess, SecretMeta, Store, Tenant, User};
use cloudattach_model::actions::{ROLE_HELP_DESK_OPERATOR, ROLE_READ_ONLY_OPERATOR};
use std::sync::OnceLock;

/// The password of every seeded user.
pub const DEV_PASSWORD: &str = "cloudattach-dev";
/// The secret of the seeded read-only apps.
pub const DEV_SECRET: &str = "cloudattach-dev-secret";
pub use cloudattach_model::dev::{
    CONTOSO_DOMAIN, CONTOSO_TENANT_ID, FABRIKAM_DOMAIN, FABRIKAM_TENANT_ID, seeded_user_object_id,
};
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
        CONTOSO_DOMAIN,
        CONTOSO_TENANT_ID,
        CONTOSO_READER_APP_ID,
    ),
    (
        "Fabrikam",
        FABRIKAM_DOMAIN,
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
        let ga = || vec![ROLE_GA.to_string()];
        let intune = |r: &str| vec![r.to_string()];
        for (local, roles, lic, intune_roles) in [
            ("admin", ga(), true, vec![]),
            ("nolicense", ga(), false, vec![]),
            ("user", vec![], false, vec![]),
            ("helpdesk", vec![], true, intune(ROLE_HELP_DESK_OPERATOR)),
            ("readonly", vec![], true, intune(ROLE_READ_ONLY_OPERATOR)),
            ("cloudonly", vec![], true, intune(ROLE_HELP_DESK_OPERATOR)),
        ] {
            let id = seeded_user_object_id(tid, local)
                .ok_or_else(|| CloudError::Storage(format!("no seeded object id for {local}")))?;
            store.create_user(&User {
                id,
                tenant_id: tid.into(),
                upn: format!("{local}@{domain}"),
                password_hash: dev_password_hash(),
                roles,
                intune_license: lic,
                intune_roles,
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
             helpdesk@{d} (Intune role Help Desk Operator)\n    \
             readonly@{d} (Intune role Read Only Operator)\n    \
             cloudonly@{d} (Intune role Help Desk Operator; a user no site knows)\n    \
             read-only app {} secret {DEV_SECRET}\n",
            t.domain,
            t.tenant_id,
            t.reader_app_id,
            d = t.domain
        ));
    }
    s.push_str(
        "  seeded users' object ids: the tenant id's first 8 hex digits, -0000-4000-9000-, and \
         000000000001 (admin) to 000000000006 (cloudonly)\n",
    );
    s.push_str(&format!(
        "  CLI public client id {}\n",
        auth::PUBLIC_CLIENT_ID
    ));
    s
}
