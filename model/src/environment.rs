//! Azure environments a site can attach to: the public cloud and the two sovereign clouds.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An Azure cloud a tenant lives in.
///
/// ```
/// use cloudattach_model::Environment;
/// let env: Environment = "usgov".parse().unwrap();
/// assert_eq!(env.authority_host(), "https://login.microsoftonline.us");
/// assert_eq!(env.to_string(), "usgov");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Azure Public Cloud.
    Public,
    /// Azure US Government Cloud.
    Usgov,
    /// Azure China Cloud, operated by 21Vianet.
    China,
}

impl Environment {
    /// Every environment, in the order the wizard lists them.
    pub const ALL: [Environment; 3] = [Environment::Public, Environment::Usgov, Environment::China];

    /// The identifier used in configuration files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Public => "public",
            Environment::Usgov => "usgov",
            Environment::China => "china",
        }
    }

    /// The name the Configuration Manager console shows.
    pub fn display_name(self) -> &'static str {
        match self {
            Environment::Public => "Azure Public Cloud",
            Environment::Usgov => "Azure US Government Cloud",
            Environment::China => "Azure China Cloud",
        }
    }

    /// The sign-in authority (Entra ID) of the environment.
    pub fn authority_host(self) -> &'static str {
        match self {
            Environment::Public => "https://login.microsoftonline.com",
            Environment::Usgov => "https://login.microsoftonline.us",
            Environment::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The Microsoft Graph host of the environment.
    pub fn graph_host(self) -> &'static str {
        match self {
            Environment::Public => "https://graph.microsoft.com",
            Environment::Usgov => "https://graph.microsoft.us",
            Environment::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEnvironment(pub String);

impl fmt::Display for UnknownEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown environment {:?}: expected public, usgov or china",
            self.0
        )
    }
}

impl std::error::Error for UnknownEnvironment {}

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Environment::Public),
            "usgov" => Ok(Environment::Usgov),
            "china" => Ok(Environment::China),
            other => Err(UnknownEnvironment(other.to_string())),
        }
    }
}
