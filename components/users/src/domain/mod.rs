//! The users service's rules, free of Spin and SQL so they are unit-tested natively. Types here
//! cannot hold invalid values: a handler that has an [`Email`] or a [`Password`] knows it passed
//! the policy ("parse, don't validate").

pub mod email;
pub mod name;
pub mod password;
pub mod refresh;
pub mod roles;
pub mod throttle;

pub use email::Email;
pub use name::DisplayName;
pub use password::Password;
