//! The files a message carries: checked and referred to before the send
//! is stored, released when a delete is.
//!
//! The reference is written before the message (see `chat_storage::media`):
//! once a member sees the message, the conversation's members may read its
//! files. Only a member's own uploads are attached; whoever else sent the
//! id learns nothing of the file (the same answer as for no file).

use chat_protocol::{Attachment, ClientMsgId, Message, UserId};
use chat_storage::media::refer;
use chat_storage::MediaRef;

use super::ConversationState;
use crate::error::ChatError;

impl ConversationState {
    /// The attachments `sender` names by media id, each now referred to
    /// by the message `client_msg_id`.
    pub(super) async fn attach(
        &self,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
        ids: Vec<String>,
    ) -> Result<Vec<Attachment>, ChatError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.member_role(sender)?;
        let reference = MediaRef::Message {
            conversation: self.id.clone(),
            sender: sender.clone(),
            client_msg_id: client_msg_id.clone(),
        };
        let mut attachments = Vec::with_capacity(ids.len());
        let not_yours =
            |id: &str| ChatError::NotFound(format!("attachment {id}: no upload of yours"));
        for id in ids {
            // The owner checked before a reference is written: a stranger's
            // id must not even briefly hold someone's file.
            let owner = self.deps.store.media(&id).await?.map(|r| r.owner);
            if owner.as_ref() != Some(sender) {
                return Err(not_yours(&id));
            }
            // A file being deleted right now refuses the reference.
            let Some(record) = refer(self.deps.store.as_ref(), &id, &reference).await? else {
                return Err(not_yours(&id));
            };
            attachments.push(Attachment {
                id,
                name: record.name,
                content_type: record.content_type,
                size: record.size,
                width: record.width,
                height: record.height,
                url: None,
                thumbnail_url: None,
            });
        }
        Ok(attachments)
    }

    /// `deleted` (its state before its delete was stored) no longer
    /// carries its files.
    pub(super) fn release_attachments(&self, deleted: Message) {
        let reference = MediaRef::Message {
            conversation: deleted.conversation,
            sender: deleted.sender,
            client_msg_id: deleted.client_msg_id,
        };
        let ids = deleted.attachments.into_iter().map(|a| a.id).collect();
        self.deps.media.released(reference, ids);
    }
}
