//! What the actors need of the node's media (the files messages carry):
//! the signed links a shown message's attachments hold, and the release of
//! a deleted message's files. The node implements it over its object
//! store; the actors only call it.

use chat_protocol::{Attachment, Message};
use chat_storage::MediaRef;

/// Signs attachments' links and releases files.
pub trait MediaLinks: Send + Sync + 'static {
    /// Fills in each attachment's `url` (and `thumbnail_url` for images)
    /// with links valid at least an hour from now.
    fn sign(&self, attachments: &mut [Attachment]);
    /// The message `reference` names no longer carries `media` (it was
    /// deleted): its references go, and each file nothing else refers to
    /// is deleted. Called on the actor's task: hand the work off.
    fn released(&self, reference: MediaRef, media: Vec<String>);
}

/// No media service: links are left out, nothing is released. For actors
/// tested on their own.
pub struct NoMedia;

impl MediaLinks for NoMedia {
    fn sign(&self, _: &mut [Attachment]) {}
    fn released(&self, _: MediaRef, _: Vec<String>) {}
}

/// `m` as a client is shown it: [`Message::for_clients`], with its
/// attachments' links signed.
pub fn shown(media: &dyn MediaLinks, m: &Message) -> Message {
    let mut m = m.for_clients().into_owned();
    if !m.attachments.is_empty() {
        media.sign(&mut m.attachments);
    }
    m
}
