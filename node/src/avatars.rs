//! Avatars (docs/protocol.md, "media"): a profile's `avatar` names an
//! image its owner uploaded. Setting one refers to the file (anyone signed
//! in may then read it); replacing or clearing it lets the old file go once
//! nothing else refers to it.

use chat_actors::media::MediaLinks;
use chat_media::is_image;
use chat_protocol::media::is_media_id;
use chat_protocol::{ErrorCode, UserId};
use chat_storage::MediaRef;

use crate::app::App;
use crate::error::HttpError;

/// `id` may be `user`'s avatar: an image they uploaded.
pub(crate) async fn check(app: &App, user: &UserId, id: &str) -> Result<(), HttpError> {
    let record = if is_media_id(id) {
        app.store.media(id).await?.filter(|r| &r.owner == user)
    } else {
        None
    };
    match record {
        None => Err(HttpError::new(
            ErrorCode::NotFound,
            "avatar: no such media of yours",
        )),
        Some(r) if !is_image(&r.content_type) || r.thumbnail.is_none() => Err(HttpError::new(
            ErrorCode::BadRequest,
            "avatar: the file is not an image",
        )),
        Some(_) => Ok(()),
    }
}

/// `id` becomes `user`'s avatar: referred to before the profile names it.
pub(crate) async fn refer(app: &App, user: &UserId, id: &str) -> Result<(), HttpError> {
    let reference = MediaRef::Avatar { user: user.clone() };
    match chat_storage::media::refer(app.store.as_ref(), id, &reference).await? {
        Some(_) => Ok(()),
        // Deleted between the check and now.
        None => Err(HttpError::new(
            ErrorCode::NotFound,
            "avatar: no such media of yours",
        )),
    }
}

/// `id` is no longer `user`'s avatar (the profile no longer names it): the
/// file goes once nothing else refers to it.
pub(crate) fn release(app: &App, user: &UserId, id: &str) {
    let reference = MediaRef::Avatar { user: user.clone() };
    app.media.released(reference, vec![id.to_owned()]);
}
