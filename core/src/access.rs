//! Who may run a cloud action on what: the site's own RBAC (`rbac.json` in the site directory:
//! discovered users, security roles, administrative users and their collections) and the whole
//! authorization chain of one request — the Intune half, the scope of the RBAC authority, the
//! site half — as one function, [`decide`], which the connector applies and `explain access`
//! shows. They cannot disagree: both call it.

use crate::site::{ALL_SYSTEMS, Site};
use cloudattach_sdk::actions::{
    AUTHORITY_BOTH, AUTHORITY_INTUNE, ActionDecl, INTUNE_INITIATE, intune_role_permissions, links,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The file of the site's RBAC in the site directory.
pub const RBAC_FILE: &str = "rbac.json";

/// The security role that grants every permission on every collection assigned.
pub const FULL_ADMINISTRATOR: &str = "Full Administrator";
/// The built-in security role that reads and reads resources.
pub const READ_ONLY_ANALYST: &str = "Read-only Analyst";

/// A user found by user discovery (Active Directory or Entra ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredUser {
    /// The user principal name, as in the tenant.
    pub upn: String,
    /// The Entra ID object id (Entra ID user discovery records it).
    pub object_id: String,
    /// The Entra ID tenant id.
    pub tenant_id: String,
    /// Which discovery found it: `entra` or `ad` (both record the tenant and object id of a
    /// synced identity).
    #[serde(default = "entra")]
    pub source: String,
}

fn entra() -> String {
    "entra".into()
}

/// A security role: named permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityRole {
    /// The role's name.
    pub name: String,
    /// The permissions it grants on the collections assigned with it (`Read`, `Read Resource`,
    /// `Run CMPivot`, `Notify Resource`, or any other a plugin's action names).
    pub permissions: Vec<String>,
}

/// An administrative user of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    /// The user principal name of the discovered user it is.
    pub upn: String,
    /// Its security roles, by name.
    pub roles: Vec<String>,
    /// The collections assigned to it (its security scope); `SMS00001` is every device.
    pub collections: Vec<String>,
}

/// `rbac.json`: the site's RBAC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SiteRbac {
    /// Users found by user discovery.
    #[serde(default)]
    pub discovered_users: Vec<DiscoveredUser>,
    /// Security roles besides the built-in `Full Administrator` and `Read-only Analyst`.
    #[serde(default)]
    pub security_roles: Vec<SecurityRole>,
    /// Administrative users.
    #[serde(default)]
    pub administrative_users: Vec<AdminUser>,
}

/// A refused `rbac.json`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct RbacError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, where, and what to do.
    pub message: String,
}

impl SiteRbac {
    /// Reads `rbac.json` from the site directory; a site without one has no administrative
    /// users (every request is refused while Configuration Manager RBAC is enforced).
    pub fn load(site: &Site) -> Result<SiteRbac, RbacError> {
        Self::load_from(&site.dir.join(RBAC_FILE), site)
    }

    fn load_from(path: &Path, site: &Site) -> Result<SiteRbac, RbacError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SiteRbac::default()),
            Err(e) => {
                return Err(RbacError {
                    path: path.into(),
                    message: format!("cannot read it: {e}"),
                });
            }
        };
        let err = |message: String| RbacError {
            path: path.into(),
            message,
        };
        let rbac: SiteRbac = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| err(format!("{e} (see the user guide for the format)")))?;
        let mut roles = BTreeSet::new();
        for r in &rbac.security_roles {
            if r.name == FULL_ADMINISTRATOR || r.name == READ_ONLY_ANALYST {
                return Err(err(format!(
                    "security_roles: \"{}\" is built in and cannot be redefined",
                    r.name
                )));
            }
            if !roles.insert(r.name.as_str()) {
                return Err(err(format!(
                    "security_roles: \"{}\" is defined twice",
                    r.name
                )));
            }
        }
        for (i, a) in rbac.administrative_users.iter().enumerate() {
            for role in &a.roles {
                if !roles.contains(role.as_str())
                    && role != FULL_ADMINISTRATOR
                    && role != READ_ONLY_ANALYST
                {
                    return Err(err(format!(
                        "administrative_users[{i}] ({}): unknown security role \"{role}\"; define \
                         it under security_roles or use \"{FULL_ADMINISTRATOR}\" or \
                         \"{READ_ONLY_ANALYST}\"",
                        a.upn
                    )));
                }
            }
            for c in &a.collections {
                if site.collection(c).is_none() {
                    return Err(err(format!(
                        "administrative_users[{i}] ({}): collection \"{c}\" is not a collection \
                         of the site",
                        a.upn
                    )));
                }
            }
        }
        Ok(rbac)
    }

    /// The permissions a security role grants; `None` for a role nobody defined.
    pub fn role_permissions(&self, role: &str) -> Option<Vec<String>> {
        match role {
            FULL_ADMINISTRATOR => Some(vec!["*".into()]),
            READ_ONLY_ANALYST => Some(vec!["Read".into(), "Read Resource".into()]),
            _ => self
                .security_roles
                .iter()
                .find(|r| r.name == role)
                .map(|r| r.permissions.clone()),
        }
    }

    fn discovered(&self, upn: &str) -> Option<&DiscoveredUser> {
        self.discovered_users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    fn admin(&self, upn: &str) -> Option<&AdminUser> {
        self.administrative_users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
    }
}

/// The person asking, as the cloud knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// UPN.
    pub upn: String,
    /// Entra object id; `None` when not known (offline).
    pub object_id: Option<String>,
    /// Entra tenant id; `None` when not known (offline).
    pub tenant_id: Option<String>,
    /// Intune roles (`Help Desk Operator`, …) and directory roles (`Global Administrator`,
    /// `Intune Administrator` hold every Intune permission); `None` when unknown (the cloud was
    /// not asked).
    pub roles: Option<Vec<String>>,
}

/// What the request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A device of the site.
    Device(i64),
    /// A collection of the site.
    Collection(String),
}

/// The inputs of the RBAC authority: the site's checkbox and the tenant's toggle (`None`
/// when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorityInputs {
    /// The rbac-authority feature's `enforce_configmgr_rbac` as this site applies it (`true`
    /// when the feature is not enabled).
    pub enforce_configmgr_rbac: bool,
    /// The tenant's "Use Intune RBAC".
    pub use_intune_rbac: Option<bool>,
}

impl AuthorityInputs {
    /// The effective authority: Intune alone only when the checkbox is cleared and the toggle
    /// is on; when the toggle is unknown, the stricter `configmgr+intune`.
    pub fn effective(&self) -> &'static str {
        if !self.enforce_configmgr_rbac && self.use_intune_rbac == Some(true) {
            AUTHORITY_INTUNE
        } else {
            AUTHORITY_BOTH
        }
    }
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The link's name: `intune-role`, `rbac-authority`, `site-user`, `site-role`,
    /// `collection-scope`, `connector`.
    pub link: &'static str,
    /// Whether it holds; `null` when it could not be known (the cloud was not reachable) or
    /// does not apply.
    pub ok: Option<bool>,
    /// What was found.
    pub detail: String,
}

/// The decision over a whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the action runs.
    pub allowed: bool,
    /// The effective RBAC authority.
    pub authority: &'static str,
    /// The first link that refused (one of [`links`]), or `null`.
    pub refused_by: Option<&'static str>,
    /// Every link, in order.
    pub chain: Vec<Link>,
}

/// The proof that a request passed the whole chain: the runner serves an action only with one,
/// and only [`Decision::authorized`] makes one.
#[derive(Debug)]
pub struct Authorized {
    authority: &'static str,
}

impl Authorized {
    /// The effective authority that allowed it.
    pub fn authority(&self) -> &'static str {
        self.authority
    }
}

impl Decision {
    /// The proof, when every link held (or did not apply).
    pub fn authorized(&self) -> Option<Authorized> {
        self.allowed.then_some(Authorized {
            authority: self.authority,
        })
    }
}

/// The link name of the RBAC authority's scope (never refuses; it decides whether the site
/// half applies).
pub const LINK_AUTHORITY: &str = "rbac-authority";
/// The link name of the connector's health (never refuses here; a connector that is down
/// makes the action time out).
pub const LINK_CONNECTOR: &str = "connector";

/// The Intune half: whether `roles` grant `INTUNE_INITIATE` and every Intune permission the
/// action declares — the rule the cloud applies when the request arrives.
pub fn intune_link(decl: &ActionDecl, roles: Option<&[String]>) -> Link {
    let Some(roles) = roles else {
        return Link {
            link: links::INTUNE_ROLE,
            ok: None,
            detail: "not known offline: the cloud decides it when the request arrives (sign in \
                     to check it)"
                .into(),
        };
    };
    let all = roles
        .iter()
        .any(|r| r == "Global Administrator" || r == "Intune Administrator");
    let granted: BTreeSet<&str> = roles
        .iter()
        .filter_map(|r| intune_role_permissions(r))
        .flatten()
        .copied()
        .collect();
    let missing: Vec<&str> = std::iter::once(INTUNE_INITIATE)
        .chain(decl.intune_permissions.iter().map(String::as_str))
        .filter(|p| !all && !granted.contains(p))
        .collect();
    let held = if roles.is_empty() {
        "no Intune role".to_string()
    } else {
        format!("roles {}", roles.join(", "))
    };
    if missing.is_empty() {
        Link {
            link: links::INTUNE_ROLE,
            ok: Some(true),
            detail: format!("{held} grant what \"{}\" needs", decl.id),
        }
    } else {
        Link {
            link: links::INTUNE_ROLE,
            ok: Some(false),
            detail: format!(
                "{held}: missing the Intune permission {} (assign an Intune role such as Help \
                 Desk Operator)",
                missing.join(", ")
            ),
        }
    }
}

/// The site half of the chain and the decision: what the connector applies to an action the
/// cloud authorized (`caller.roles` `None`), and what `explain access` shows with the roles the
/// cloud reports.
pub fn decide(
    site: &Site,
    rbac: &SiteRbac,
    authority: AuthorityInputs,
    caller: &Caller,
    decl: &ActionDecl,
    target: &Target,
) -> Decision {
    let mut chain = vec![intune_link(decl, caller.roles.as_deref())];
    let effective = authority.effective();
    chain.push(Link {
        link: LINK_AUTHORITY,
        ok: Some(true),
        detail: format!(
            "{effective}: enforce_configmgr_rbac = {}, tenant's \"Use Intune RBAC\" {}",
            authority.enforce_configmgr_rbac,
            match authority.use_intune_rbac {
                Some(true) => "on",
                Some(false) => "off",
                None => "not known (taken as off)",
            }
        ),
    });
    if effective == AUTHORITY_INTUNE {
        for link in [links::SITE_USER, links::SITE_ROLE, links::COLLECTION_SCOPE] {
            chain.push(Link {
                link,
                ok: None,
                detail: "not checked: Intune is the only authority".into(),
            });
        }
    } else {
        site_links(site, rbac, caller, decl, target, &mut chain);
    }
    let refused_by = chain.iter().find(|l| l.ok == Some(false)).map(|l| l.link);
    Decision {
        allowed: refused_by.is_none(),
        authority: effective,
        refused_by,
        chain,
    }
}

fn site_links(
    site: &Site,
    rbac: &SiteRbac,
    caller: &Caller,
    decl: &ActionDecl,
    target: &Target,
    chain: &mut Vec<Link>,
) {
    let skipped = |chain: &mut Vec<Link>, from: usize| {
        for link in [links::SITE_USER, links::SITE_ROLE, links::COLLECTION_SCOPE][from..]
            .iter()
            .copied()
        {
            chain.push(Link {
                link,
                ok: None,
                detail: "not reached".into(),
            });
        }
    };
    // Site user: user discovery on, and a discovered user with the caller's identity.
    let discovery = site.info.entra_user_discovery || site.info.ad_user_discovery;
    let user_link = if !discovery {
        Err(
            "user discovery is off on the site (turn on Entra ID or Active Directory user \
             discovery so cloud users map to site users)"
                .to_string(),
        )
    } else {
        match rbac.discovered(&caller.upn) {
            None => Err(format!(
                "{} is not a discovered user of the site (a cloud-only account maps to no site \
                 user; it can act only when Intune is the only authority)",
                caller.upn
            )),
            Some(u)
                if caller
                    .object_id
                    .as_ref()
                    .is_some_and(|id| !u.object_id.eq_ignore_ascii_case(id)) =>
            {
                Err(format!(
                    "the discovered user {} has object id {}, the caller {}: not the same identity",
                    u.upn,
                    u.object_id,
                    caller.object_id.as_deref().unwrap_or_default()
                ))
            }
            Some(u)
                if caller
                    .tenant_id
                    .as_ref()
                    .is_some_and(|id| !u.tenant_id.eq_ignore_ascii_case(id)) =>
            {
                Err(format!(
                    "the discovered user {} belongs to tenant {}, the caller to {}",
                    u.upn,
                    u.tenant_id,
                    caller.tenant_id.as_deref().unwrap_or_default()
                ))
            }
            Some(u) => Ok(format!(
                "{} is a discovered user ({} discovery, object id {}){}",
                u.upn,
                u.source,
                u.object_id,
                if caller.object_id.is_none() {
                    "; the caller's object id is not known offline, so only the UPN was matched"
                } else {
                    ""
                }
            )),
        }
    };
    match user_link {
        Err(detail) => {
            chain.push(Link {
                link: links::SITE_USER,
                ok: Some(false),
                detail,
            });
            return skipped(chain, 1);
        }
        Ok(detail) => chain.push(Link {
            link: links::SITE_USER,
            ok: Some(true),
            detail,
        }),
    }
    // Site role: an administrative user whose roles grant every site permission of the action.
    let Some(admin) = rbac.admin(&caller.upn) else {
        chain.push(Link {
            link: links::SITE_ROLE,
            ok: Some(false),
            detail: format!("{} is not an administrative user of the site", caller.upn),
        });
        return skipped(chain, 2);
    };
    let granted: BTreeSet<String> = admin
        .roles
        .iter()
        .filter_map(|r| rbac.role_permissions(r))
        .flatten()
        .collect();
    let missing: Vec<&str> = decl
        .site_permissions
        .iter()
        .map(String::as_str)
        .filter(|p| !granted.contains("*") && !granted.contains(*p))
        .collect();
    if !missing.is_empty() {
        chain.push(Link {
            link: links::SITE_ROLE,
            ok: Some(false),
            detail: format!(
                "the security roles {} grant no {}",
                if admin.roles.is_empty() {
                    "(none)".to_string()
                } else {
                    admin.roles.join(", ")
                },
                missing.join(", ")
            ),
        });
        return skipped(chain, 2);
    }
    chain.push(Link {
        link: links::SITE_ROLE,
        ok: Some(true),
        detail: format!(
            "{} grants {}",
            admin.roles.join(", "),
            decl.site_permissions.join(", ")
        ),
    });
    // Collection scope.
    let found = match target {
        Target::Device(id) => admin
            .collections
            .iter()
            .find(|c| site.is_member(c, *id))
            .map(|c| format!("device {id} is in the assigned collection {c}")),
        Target::Collection(id) => admin
            .collections
            .iter()
            .find(|c| c.as_str() == id || c.as_str() == ALL_SYSTEMS)
            .map(|c| format!("the collection {id} is within the assigned collection {c}")),
    };
    chain.push(match found {
        Some(detail) => Link {
            link: links::COLLECTION_SCOPE,
            ok: Some(true),
            detail,
        },
        None => Link {
            link: links::COLLECTION_SCOPE,
            ok: Some(false),
            detail: format!(
                "{} is in none of the collections assigned to {} ({})",
                match target {
                    Target::Device(id) => format!("device {id}"),
                    Target::Collection(id) => format!("the collection {id}"),
                },
                caller.upn,
                if admin.collections.is_empty() {
                    "none".to_string()
                } else {
                    admin.collections.join(", ")
                }
            ),
        },
    });
}
