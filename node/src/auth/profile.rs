//! The profile beside the account: where the display name shown in every
//! answer of a sign-in comes from. An account made before profiles existed
//! gets one from its record the first time it is shown.

use chat_protocol::{now_ms, UserId};
use chat_storage::{MessageStore, ProfileRecord, StoreError, UserRecord};

use super::wire::UserView;

/// `user`'s profile as stored; if there is none yet, one made with
/// `display_name` (the account record's), stored so that the name index
/// finds the user.
pub async fn ensure_profile(
    store: &dyn MessageStore,
    user: &UserId,
    display_name: Option<&str>,
) -> Result<ProfileRecord, StoreError> {
    if let Some(p) = store.profile(user).await? {
        return Ok(p);
    }
    let p = ProfileRecord {
        display_name: display_name.map(str::to_owned),
        updated_at: now_ms(),
        ..ProfileRecord::default()
    };
    store.put_profile(user, None, &p).await?;
    Ok(p)
}

/// The user as a sign-in's answer shows them.
pub(super) async fn view(
    store: &dyn MessageStore,
    record: &UserRecord,
) -> Result<UserView, StoreError> {
    let p = ensure_profile(store, &record.id, record.display_name.as_deref()).await?;
    Ok(UserView {
        id: record.id.clone(),
        display_name: p.display_name,
        created_at: record.created_at,
    })
}
