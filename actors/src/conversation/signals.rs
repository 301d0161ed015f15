//! What members signal without writing a message: typing and read markers
//! (receipts).

use chat_protocol::{MessageId, ReceiptKind, ServerFrame, UserId};
use chat_storage::StoreError;
use ractor::ActorRef;

use super::{answer, event, ok, ConversationState};
use crate::msg::{ConversationMsg, Reply};

impl ConversationState {
    pub(super) fn typing(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        active: bool,
    ) {
        if self.member_role(&user).is_err() {
            return;
        }
        if active {
            self.typing_seq += 1;
            let token = self.typing_seq;
            let was = self.typing.insert(user.clone(), token).is_some();
            let u = user.clone();
            myself.send_after(self.deps.tuning.typing_timeout, move || {
                ConversationMsg::TypingExpired { user: u, token }
            });
            if !was {
                self.broadcast_typing(&user, true);
            }
        } else if self.typing.remove(&user).is_some() {
            self.broadcast_typing(&user, false);
        }
    }

    pub(super) fn typing_expired(&mut self, user: UserId, token: u64) {
        if self.typing.get(&user) == Some(&token) {
            self.typing.remove(&user);
            self.broadcast_typing(&user, false);
        }
    }

    fn broadcast_typing(&self, user: &UserId, active: bool) {
        let frame = ServerFrame::Typing {
            conversation: self.id.clone(),
            user: user.clone(),
            active,
        };
        self.fan_out(&event(frame), Some(user));
    }

    pub(super) fn read(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        up_to: MessageId,
        reply: Option<Reply>,
    ) {
        if let Err(e) = self.member_role(&user) {
            return answer(reply, Err(e));
        }
        // A marker past the newest message would mark future messages read.
        let up_to = up_to.min(self.last_id);
        let current = self.markers.get(&user).copied().unwrap_or_default();
        if up_to <= current {
            return answer(reply, Ok(ok()));
        }
        self.markers.insert(user.clone(), up_to);
        self.reads_in_flight += 1;
        let store = self.deps.store.clone();
        let id = self.id.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = store.set_read_marker(&id, &user, up_to).await;
            let _ = me.cast(ConversationMsg::ReadStored {
                user,
                up_to,
                result,
                reply,
            });
        });
    }

    pub(super) fn read_stored(
        &mut self,
        user: UserId,
        up_to: MessageId,
        result: Result<(), StoreError>,
        reply: Option<Reply>,
    ) {
        self.reads_in_flight -= 1;
        match result {
            Ok(()) => {
                answer(reply, Ok(ok()));
                let frame = ServerFrame::Receipt {
                    conversation: self.id.clone(),
                    user,
                    up_to,
                    kind: ReceiptKind::Read,
                };
                self.fan_out(&event(frame), None);
            }
            Err(e) => {
                self.deps.metrics.store_errors.inc();
                // Forget the optimistic marker only if nothing newer replaced it.
                if self.markers.get(&user) == Some(&up_to) {
                    self.markers.remove(&user);
                }
                answer(reply, Err(e.into()));
            }
        }
    }
}
