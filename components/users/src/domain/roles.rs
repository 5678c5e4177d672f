//! Role changes.

use bazaar_platform::Role;

/// Why a role change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChangeError {
    /// The change would leave the shop without any admin.
    LastAdmin,
}

/// Whether the user whose role is `current` may get role `new`, given `admins` (the number of
/// admins, the target included when it is one). An admin may demote any admin, themselves
/// included, as long as one admin remains: a shop nobody can administer can only be repaired
/// with database access.
pub fn check_change(current: Role, new: Role, admins: u64) -> Result<(), RoleChangeError> {
    if current == Role::Admin && new != Role::Admin && admins <= 1 {
        return Err(RoleChangeError::LastAdmin);
    }
    Ok(())
}

/// Parses a role name from a request body.
pub fn parse_role(raw: &str) -> Result<Role, &'static str> {
    raw.parse()
        .map_err(|()| "must be one of customer, vendor, admin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_admin_cannot_be_demoted() {
        assert_eq!(
            check_change(Role::Admin, Role::Customer, 1),
            Err(RoleChangeError::LastAdmin)
        );
        assert_eq!(
            check_change(Role::Admin, Role::Vendor, 1),
            Err(RoleChangeError::LastAdmin)
        );
        assert_eq!(check_change(Role::Admin, Role::Vendor, 2), Ok(()));
        assert_eq!(check_change(Role::Admin, Role::Admin, 1), Ok(()));
        assert_eq!(check_change(Role::Customer, Role::Admin, 1), Ok(()));
        assert_eq!(check_change(Role::Vendor, Role::Customer, 0), Ok(()));
    }

    #[test]
    fn roles_parse_exactly() {
        assert_eq!(parse_role("vendor"), Ok(Role::Vendor));
        assert!(parse_role("Admin").is_err());
        assert!(parse_role("root").is_err());
    }
}
