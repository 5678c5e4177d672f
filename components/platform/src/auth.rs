//! The verified caller, as the gateway hands it to services.
//!
//! Only the gateway verifies access tokens (signature, `exp`, `nbf`, `iss`, `aud`, pinned
//! algorithm). It removes every `x-bazaar-*` header a client sent and, for a valid token, adds
//! [`USER_ID_HEADER`] and [`ROLE_HEADER`]. Services have private routes (reachable only through
//! `*.spin.internal` chaining), so these headers cannot come from outside the application.
//!
//! The gateway also passes the client's address in [`CLIENT_ADDR_HEADER`] (chained requests
//! otherwise only carry the loopback address), for per-client throttling.

use std::fmt;
use std::str::FromStr;

use crate::problem::Problem;

/// The verified subject (`sub` claim) of the caller's access token.
pub const USER_ID_HEADER: &str = "x-bazaar-user-id";
/// The verified role (`role` claim) of the caller's access token.
pub const ROLE_HEADER: &str = "x-bazaar-role";
/// The address of the client that sent the request to the gateway.
pub const CLIENT_ADDR_HEADER: &str = "x-bazaar-client-addr";
/// Prefix of every header the gateway owns; stripped from client requests.
pub const INTERNAL_HEADER_PREFIX: &str = "x-bazaar-";

/// A user's role. Ordered by privilege only for display; checks name the roles they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Vendor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Vendor => "vendor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "customer" => Ok(Role::Customer),
            "vendor" => Ok(Role::Vendor),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// A caller whose token the gateway verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub role: Role,
}

impl Identity {
    /// Reads the identity headers; `None` for an anonymous caller. A half-present or malformed
    /// pair is treated as anonymous (the gateway always sets both or neither).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Identity> {
        let user_id = header(USER_ID_HEADER)?.trim();
        let role = header(ROLE_HEADER)?.trim().parse().ok()?;
        if user_id.is_empty() {
            return None;
        }
        Some(Identity {
            user_id: user_id.to_owned(),
            role,
        })
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require_role(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "This action needs the role {}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }

    /// 403 unless the caller is `owner_id` or an admin.
    pub fn require_self_or_admin(&self, owner_id: &str) -> Result<(), Problem> {
        if self.is_admin() || self.user_id == owner_id {
            Ok(())
        } else {
            Err(Problem::forbidden("Only the owner or an admin may do this"))
        }
    }
}

/// 401 for an anonymous caller on an authenticated route.
pub fn require_identity(identity: Option<Identity>) -> Result<Identity, Problem> {
    identity.ok_or_else(|| {
        Problem::unauthorized("This route needs a valid access token (Authorization: Bearer …)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn identity_needs_both_headers_and_a_known_role() {
        let id =
            Identity::from_headers(headers(&[(USER_ID_HEADER, "u1"), (ROLE_HEADER, "vendor")]))
                .unwrap();
        assert_eq!(id.role, Role::Vendor);
        assert!(Identity::from_headers(headers(&[(USER_ID_HEADER, "u1")])).is_none());
        assert!(
            Identity::from_headers(headers(&[(USER_ID_HEADER, "u1"), (ROLE_HEADER, "root")]))
                .is_none()
        );
        assert!(
            Identity::from_headers(headers(&[(USER_ID_HEADER, " "), (ROLE_HEADER, "admin")]))
                .is_none()
        );
    }

    #[test]
    fn role_and_ownership_checks() {
        let vendor = Identity {
            user_id: "v1".into(),
            role: Role::Vendor,
        };
        assert!(vendor.require_role(&[Role::Admin, Role::Vendor]).is_ok());
        assert_eq!(
            vendor
                .require_role(&[Role::Admin])
                .unwrap_err()
                .status_code(),
            http::StatusCode::FORBIDDEN
        );
        assert!(vendor.require_self_or_admin("v1").is_ok());
        assert!(vendor.require_self_or_admin("v2").is_err());
        let admin = Identity {
            user_id: "a".into(),
            role: Role::Admin,
        };
        assert!(admin.require_self_or_admin("v2").is_ok());
        assert_eq!(
            require_identity(None).unwrap_err().status_code(),
            http::StatusCode::UNAUTHORIZED
        );
    }
}
