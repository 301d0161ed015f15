//! Mail jobs: a digest of what a member left unread, and the mail that
//! verifies an address. A digest lists the messages still unread when it
//! runs and takes every item it looked at out of the digest, so each
//! message is in at most one mail.

use chat_protocol::{now_ms, UserId};
use chat_storage::{DigestItem, EmailToken, TokenPurpose};

use crate::links::new_token;
use crate::mail::{DigestLine, MailError};
use crate::runner::{backoff, After};
use crate::{Ctx, NotifyError};

/// How long a verification link works.
const VERIFY_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long a password reset link works.
const RESET_TTL_MS: u64 = 30 * 60 * 1000;
/// Messages one digest lists; the rest go in the next.
const DIGEST_LINES: usize = 50;
/// Characters of each message a digest shows.
const LINE_CHARS: usize = 200;

/// Runs `user`'s digest.
pub(crate) async fn digest(ctx: &Ctx, user: &UserId, attempts: u32) -> Result<After, NotifyError> {
    let store = ctx.store.as_ref();
    let mut items = store.digest_items(user).await?;
    if items.is_empty() {
        // Another job of this digest mailed them already.
        return Ok(After::Done);
    }
    items.truncate(DIGEST_LINES);
    let Some(mailer) = &ctx.mailer else {
        store.remove_digest_items(user, &items).await?;
        return Ok(After::Drop("mail is not configured".into()));
    };
    let settings = store.notification_settings(user).await?.unwrap_or_default();
    let email = store.email(user).await?.filter(|e| e.verified);
    let (Some(email), true) = (email, settings.email.enabled) else {
        store.remove_digest_items(user, &items).await?;
        ctx.metrics
            .counted(&ctx.metrics.cancelled, "email", items.len());
        return Ok(After::Done);
    };
    let lines = unread_lines(ctx, user, &items).await?;
    if lines.is_empty() {
        // All read (or deleted, or muted) in time: nothing to mail.
        store.remove_digest_items(user, &items).await?;
        ctx.metrics
            .counted(&ctx.metrics.cancelled, "email", items.len());
        return Ok(After::Done);
    }
    let unsubscribe = ctx.links.unsubscribe(user.as_str());
    let sent = match mailer.digest(&email.address, &lines, &ctx.links.app(), &unsubscribe) {
        Ok(mail) => mailer.send(mail).await,
        Err(e) => Err(e),
    };
    finish_mail(ctx, sent, attempts, || async {
        store.remove_digest_items(user, &items).await
    })
    .await
}

/// The digest's lines: its messages still there, unread and not muted.
async fn unread_lines(
    ctx: &Ctx,
    user: &UserId,
    items: &[DigestItem],
) -> Result<Vec<DigestLine>, NotifyError> {
    let store = ctx.store.as_ref();
    let now = now_ms();
    let mut lines = Vec::new();
    for item in items {
        let c = &item.conversation;
        let Some(m) = store.message(c, item.message).await? else {
            continue;
        };
        let read = store.read_marker(c, user).await?.is_some_and(|r| r >= m.id);
        let muted = store
            .conversation_notify(user, c)
            .await?
            .is_some_and(|n| n.muted_at(now));
        if m.deleted || read || muted {
            continue;
        }
        let title = match store.conversation(c).await? {
            Some(conv) => conv.title.unwrap_or_else(|| "a direct message".into()),
            None => continue,
        };
        lines.push(DigestLine {
            conversation: title,
            sender: m.sender.to_string(),
            body: m.body.chars().take(LINE_CHARS).collect(),
        });
    }
    Ok(lines)
}

/// Mails `user` a link proving `address` is theirs, unless the address
/// changed or was verified since.
pub(crate) async fn verify(
    ctx: &Ctx,
    user: &UserId,
    address: &str,
    attempts: u32,
) -> Result<After, NotifyError> {
    let current = ctx.store.email(user).await?;
    if current.is_none_or(|e| e.address != address || e.verified) {
        return Ok(After::Done);
    }
    mail_link(ctx, user, address, TokenPurpose::VerifyEmail, attempts).await
}

/// Mails the user who verified `address` a single-use link that sets a
/// new password (valid [`RESET_TTL_MS`]); nothing when no user did, or
/// they changed address since.
pub(crate) async fn reset_password(
    ctx: &Ctx,
    address: &str,
    attempts: u32,
) -> Result<After, NotifyError> {
    let store = ctx.store.as_ref();
    let Some(user) = store.email_owner(address).await? else {
        return Ok(After::Done);
    };
    match store.email(&user).await? {
        Some(e) if e.verified && e.address.eq_ignore_ascii_case(address) => {
            mail_link(
                ctx,
                &user,
                &e.address,
                TokenPurpose::ResetPassword,
                attempts,
            )
            .await
        }
        _ => Ok(After::Done),
    }
}

/// Mails `address` (`user`'s) a link with a new token for `purpose`. A
/// token per attempt: one mailed before a failure report still works.
async fn mail_link(
    ctx: &Ctx,
    user: &UserId,
    address: &str,
    purpose: TokenPurpose,
    attempts: u32,
) -> Result<After, NotifyError> {
    let Some(mailer) = &ctx.mailer else {
        return Ok(After::Drop("mail is not configured".into()));
    };
    let ttl = match purpose {
        TokenPurpose::VerifyEmail => VERIFY_TTL_MS,
        TokenPurpose::ResetPassword => RESET_TTL_MS,
    };
    let (token, hash) = new_token();
    ctx.store
        .put_email_token(&EmailToken {
            hash,
            user: user.clone(),
            address: address.to_owned(),
            purpose,
            expires_at: now_ms() + ttl,
        })
        .await?;
    let mail = match purpose {
        TokenPurpose::VerifyEmail => mailer.verification(address, &ctx.links.verify_email(&token)),
        TokenPurpose::ResetPassword => {
            mailer.password_reset(address, &ctx.links.reset_password(&token))
        }
    };
    let sent = match mail {
        Ok(mail) => mailer.send(mail).await,
        Err(e) => Err(e),
    };
    finish_mail(ctx, sent, attempts, || async { Ok(()) }).await
}

/// Counts a mail's outcome and says what becomes of its job; `done` runs
/// once it went.
async fn finish_mail<F, Fut>(
    ctx: &Ctx,
    sent: Result<(), MailError>,
    attempts: u32,
    done: F,
) -> Result<After, NotifyError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), chat_storage::StoreError>>,
{
    match sent {
        Ok(()) => {
            done().await?;
            ctx.metrics.counted(&ctx.metrics.sent, "email", 1);
            Ok(After::Done)
        }
        Err(e) if e.transient => Ok(After::Retry(backoff(ctx, attempts, None), e.text)),
        Err(e) => Ok(After::Drop(e.text)),
    }
}
