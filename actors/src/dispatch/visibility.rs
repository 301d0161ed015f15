//! Whose presence a user may see: a setting of the node, which the
//! dispatcher holds and `watch` applies.

/// Whose presence a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Users who share a conversation with them (and themselves).
    #[default]
    Contacts,
    /// Anyone.
    Everyone,
}
