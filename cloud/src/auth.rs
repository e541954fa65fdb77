//! Signing keys, access tokens, password and secret hashing, the authenticated caller.

use crate::error::ApiError;
use crate::util;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The resource id (audience) of the service.
pub const RESOURCE: &str = "api://cloudattach";
/// The CLI's well-known public client id, known in every tenant.
pub const PUBLIC_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c11e";
/// Permission: read collection data.
pub const PERM_READ: &str = "CmCollectionData.read";
/// Permission: write collection data.
pub const PERM_WRITE: &str = "CmCollectionData.write";
/// Permission: Microsoft Graph Directory.Read.All.
pub const PERM_DIRECTORY_READ: &str = "Directory.Read.All";
/// Role: Global Administrator.
pub const ROLE_GA: &str = "Global Administrator";
/// Role: Intune Administrator.
pub const ROLE_INTUNE_ADMIN: &str = "Intune Administrator";
/// File name of the signing key inside the data dir.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

/// The RS256 signing key of a data dir.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    enc: EncodingKey,
    dec: DecodingKey,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

/// Generates a new 2048-bit RSA key as PKCS#1 PEM.
pub fn generate_key_pem() -> Result<String, String> {
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

impl SigningKey {
    /// Loads `dir/signing-key.pem`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<SigningKey, String> {
        let path = dir.join(SIGNING_KEY_FILE);
        let pem = match std::fs::read_to_string(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = generate_key_pem()?;
                write_private(&path, pem.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                pem
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::from_pem(&pem)
    }

    /// Builds the key from PKCS#1 PEM.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let key =
            rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| format!("bad signing key: {e}"))?;
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        let kid = util::sha256_hex(n.as_bytes())[..16].to_string();
        let enc = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let dec = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
        Ok(SigningKey {
            kid,
            enc,
            dec,
            n,
            e,
        })
    }

    /// The JWKS document.
    pub fn jwks(&self, issuer: &str) -> serde_json::Value {
        serde_json::json!({"keys":[{
            "kty":"RSA","use":"sig","alg":"RS256","kid":self.kid,"x5t":self.kid,
            "n":self.n,"e":self.e,"issuer":issuer
        }]})
    }

    /// Signs claims.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(self.kid.clone());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap_or_default()
    }

    /// Verifies signature, audience and expiry; the caller checks issuer and tenant.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[RESOURCE]);
        v.leeway = 0;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "aud", "iss", "nbf"]);
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired".to_string()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    format!("the token's audience is not {RESOURCE}")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token's signature is invalid".to_string()
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    "the token is not yet valid".to_string()
                }
                _ => "the token is malformed".to_string(),
            })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

/// Access token claims (a subset of Entra's v2.0 tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Audience.
    pub aud: String,
    /// Issuer: `{base}/{tid}/v2.0`.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Tenant id.
    pub tid: String,
    /// Subject.
    pub sub: String,
    /// Object id of the user or the app's service principal.
    pub oid: String,
    /// Client id.
    pub azp: String,
    /// "user" or "app".
    pub idtyp: String,
    /// Delegated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// Application permissions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// User principal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Token version.
    pub ver: String,
    /// Token id.
    pub jti: String,
}

/// Who calls an API endpoint.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id the token was issued to.
    pub client_id: String,
    /// User or app.
    pub kind: CallerKind,
}

/// The kind of caller.
#[derive(Debug, Clone)]
pub enum CallerKind {
    /// A signed-in user (delegated token).
    User {
        /// Object id.
        id: String,
        /// UPN.
        upn: String,
        /// Directory roles (current, from the directory).
        roles: Vec<String>,
        /// Intune license.
        intune_license: bool,
        /// Intune roles (current, from the directory).
        intune_roles: Vec<String>,
    },
    /// An application (client credentials).
    App {
        /// Consented application permissions.
        permissions: Vec<String>,
    },
}

impl Caller {
    /// A Global Administrator user.
    pub fn is_global_admin(&self) -> bool {
        matches!(&self.kind, CallerKind::User { roles, .. } if roles.iter().any(|r| r == ROLE_GA))
    }

    /// A user allowed to change Intune roles (Global or Intune Administrator).
    pub fn is_intune_role_admin(&self) -> bool {
        matches!(&self.kind, CallerKind::User { roles, .. }
            if roles.iter().any(|r| r == ROLE_GA || r == ROLE_INTUNE_ADMIN))
    }

    /// The Intune permissions of cloud-attached devices the caller holds: every one for a
    /// Global or Intune Administrator, else the union of its Intune roles' (none for an app).
    pub fn intune_permissions(&self) -> Vec<&'static str> {
        match &self.kind {
            CallerKind::User { .. } if self.is_intune_role_admin() => {
                cloudattach_model::actions::ALL_INTUNE_PERMISSIONS.to_vec()
            }
            CallerKind::User { intune_roles, .. } => {
                cloudattach_model::actions::intune_permissions_of(intune_roles)
            }
            CallerKind::App { .. } => Vec::new(),
        }
    }

    /// A signed-in user (delegated token) of the tenant: its object id and UPN.
    pub fn user(&self) -> Option<(&str, &str)> {
        match &self.kind {
            CallerKind::User { id, upn, .. } => Some((id, upn)),
            CallerKind::App { .. } => None,
        }
    }

    fn has_perm(&self, p: &str) -> bool {
        matches!(&self.kind, CallerKind::App { permissions } if permissions.iter().any(|x| x == p))
    }

    /// The client id when the caller is an app.
    pub fn app_id(&self) -> Option<&str> {
        match self.kind {
            CallerKind::App { .. } => Some(&self.client_id),
            CallerKind::User { .. } => None,
        }
    }

    /// May read gateway and read-API data of its tenant.
    pub fn require_read(&self) -> Result<(), ApiError> {
        if self.is_intune_role_admin()
            || self.has_perm(PERM_READ)
            || self.has_perm(PERM_WRITE)
            || !self.intune_permissions().is_empty()
        {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "reading collection data needs a Global or Intune Administrator, a user with an \
                 Intune role (Help Desk Operator, Read Only Operator), or an app with \
                 CmCollectionData.read and admin consent",
            ))
        }
    }

    /// May write through the attach gateway.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.is_intune_role_admin() || (self.has_perm(PERM_READ) && self.has_perm(PERM_WRITE)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "writing through the attach gateway needs a Global or Intune Administrator, or an \
                 app with CmCollectionData.read and CmCollectionData.write and admin consent",
            ))
        }
    }

    /// Must be a Global Administrator (delegated).
    pub fn require_global_admin(&self) -> Result<(), ApiError> {
        if self.is_global_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this operation needs a signed-in Global Administrator",
            ))
        }
    }

    /// May the caller read directory objects (apps)?
    pub fn can_read_directory(&self) -> bool {
        matches!(self.kind, CallerKind::User { .. }) || self.has_perm(PERM_DIRECTORY_READ)
    }
}

/// Hashes a password: Argon2id (19 MiB, 2 passes), PHC string with a random salt.
pub fn hash_password(pw: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Verifies a password against a PHC string.
pub fn verify_password(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Hashes an app secret: `salt$sha256(salt:secret)`. Secrets are 256-bit random values
/// (except the documented development secret), so a fast salted hash is adequate.
pub fn hash_secret(secret: &str) -> String {
    let salt = util::random_token(16);
    format!(
        "{salt}${}",
        util::sha256_hex(format!("{salt}:{secret}").as_bytes())
    )
}

/// Verifies an app secret against [`hash_secret`]'s output.
pub fn verify_secret(secret: &str, stored: &str) -> bool {
    match stored.split_once('$') {
        Some((salt, h)) => util::ct_eq(&util::sha256_hex(format!("{salt}:{secret}").as_bytes()), h),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords() {
        let h = hash_secret("s3cret");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cres", &h));
        assert!(!h.contains("s3cret"));
        let p = hash_password("pw");
        assert!(verify_password("pw", &p));
        assert!(!verify_password("px", &p));
    }
}
