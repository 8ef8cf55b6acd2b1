//! Domain values signup-api parses requests into, once, at the edge.

pub mod email;
pub mod password;
pub mod profile;
pub mod signup;
