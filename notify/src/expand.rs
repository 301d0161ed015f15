//! Stage one of the outbox: a marked conversation's new messages turned
//! into jobs for the members the rules pick, then the cursor moved past
//! them. Jobs are written before the cursor moves, so a crash between the
//! two repeats the jobs (same message ids) rather than losing them.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::people::Relations;
use chat_protocol::{Conversation, Message, Presence, Status, UserId};
use chat_storage::{DigestItem, Job, Mark, NotifyCursor};

use crate::admission::Full;
use crate::jobs::{digest_job_id, job_id, Work};
use crate::rules::{reason, Member};
use crate::{Ctx, NotifyError};

/// Changes read per conversation per pass.
const CHANGES_PER_PASS: usize = 256;
/// Bytes of changes read per conversation per pass.
const CHANGE_BYTES_PER_PASS: usize = 1 << 20;

/// What stage one did with a mark: the cursor to move to, and whether the
/// mark is to be cleared (no more changes wait behind this pass's). The
/// worker writes every conversation's in one batch per pass: a write each
/// would cost a durable commit per conversation per pass.
pub(crate) struct Finish {
    pub(crate) shard: u32,
    pub(crate) mark: Mark,
    pub(crate) cursor: NotifyCursor,
    pub(crate) clear: bool,
}

/// Marks of one shard a pass lists; the rest wait for the next pass.
pub(crate) const MARKS_PER_SHARD: usize = 256;

/// Works through the marks of `shard`; what to write for each.
pub(crate) async fn expand_shard(ctx: &Ctx, shard: u32) -> Result<Vec<Finish>, NotifyError> {
    let marks = ctx.store.marks(shard, MARKS_PER_SHARD).await?;
    let mut done = Vec::with_capacity(marks.len());
    for mark in marks {
        done.push(expand_one(ctx, shard, mark).await?);
    }
    Ok(done)
}

/// What one pass learned of a member who was away, read once however many
/// messages it judges.
struct Known {
    settings: NotificationSettings,
    notify: ConversationNotify,
    subscriptions: Vec<PushSubscription>,
    /// Whether digests go to them: on, and a verified address.
    mailed: bool,
    /// Whom they blocked: their messages notify them of nothing.
    relations: Option<Relations>,
}

impl Known {
    async fn read(ctx: &Ctx, user: &UserId, c: &Conversation) -> Result<Known, NotifyError> {
        let store = ctx.store.as_ref();
        let settings = store.notification_settings(user).await?.unwrap_or_default();
        let notify = store
            .conversation_notify(user, &c.id)
            .await?
            .unwrap_or_else(|| c.kind.default_notify());
        // Only someone push could reach costs the read of their browsers.
        let subscriptions = if settings.push.enabled {
            store.push_subscriptions(user).await?
        } else {
            Vec::new()
        };
        let mailed = settings.email.enabled && store.email(user).await?.is_some_and(|e| e.verified);
        let relations = store.relations(user).await?;
        Ok(Known {
            settings,
            notify,
            subscriptions,
            mailed,
            relations,
        })
    }
}

async fn expand_one(ctx: &Ctx, shard: u32, mark: Mark) -> Result<Finish, NotifyError> {
    let store = ctx.store.as_ref();
    let id = &mark.conversation;
    let conversation = store.conversation(id).await?;
    let away = match &conversation {
        Some(c) => away_members(ctx, c).await?,
        None => HashMap::new(),
    };
    let hooks = ctx.webhooks.wanted("message.created") || ctx.webhooks.wanted("message.updated");
    if away.is_empty() && !hooks {
        // Nobody to tell (everyone was online, or the conversation is
        // gone): move past it all without reading it. The last message
        // first: one stored after both reads is past the cursor either way.
        // The cursor is raised by max when written: no need to read it.
        // Its revision stays: on a shared store the revision index may
        // already count a write whose message row has not landed, and a
        // cursor moved past it would never come back to it. The last
        // message is one that landed; later ones have higher ids.
        let last = store.last_message(id).await?.map(|m| m.id);
        let next = NotifyCursor {
            rev: 0,
            last_id: last.unwrap_or_default(),
        };
        return Ok(Finish {
            shard,
            mark,
            cursor: next,
            clear: true,
        });
    }
    let cursor = store.notify_cursor(id).await?;
    let last_rev = store.last_rev(id).await?;
    let changes = store
        .changes(
            id,
            cursor.rev,
            last_rev,
            CHANGES_PER_PASS,
            CHANGE_BYTES_PER_PASS,
        )
        .await?;
    let fresh: Vec<&Message> = changes
        .messages
        .iter()
        .filter(|m| m.id > cursor.last_id)
        .collect();
    let mut jobs = Vec::new();
    if let (Some(c), false, false) = (&conversation, fresh.is_empty(), away.is_empty()) {
        jobs = jobs_for(ctx, c, &away, &fresh).await?;
    }
    // Operators' webhooks hear of every change, new or updated.
    let now = chat_protocol::now_ms();
    for m in &changes.messages {
        let event = if m.id > cursor.last_id {
            "message.created"
        } else {
            "message.updated"
        };
        if ctx.webhooks.wanted(event) {
            let data = serde_json::json!({"message": m.for_clients()});
            jobs.extend(ctx.webhooks.jobs(event, data, now));
        }
    }
    // Over a bound (see `admission`), new work is dropped (and counted)
    // rather than let the outbox grow without end while push services are
    // down.
    let mut kept = Vec::with_capacity(jobs.len());
    let (mut over_queue, mut over_member) = (0usize, 0usize);
    for job in jobs {
        let channel = channel_of(&job);
        match ctx.admission.admit(&job, channel == "push") {
            Ok(()) => kept.push(job),
            Err(full) => {
                ctx.metrics.counted(&ctx.metrics.dropped, channel, 1);
                match full {
                    Full::Queue => over_queue += 1,
                    Full::Member => over_member += 1,
                }
            }
        }
    }
    if let Err(e) = store.put_jobs(&kept).await {
        // Not queued after all: the next pass makes them again.
        for job in &kept {
            ctx.admission.release(job, channel_of(job) == "push");
        }
        return Err(e.into());
    }
    for job in &kept {
        ctx.metrics.counted(&ctx.metrics.queued, channel_of(job), 1);
    }
    if over_queue > 0 {
        tracing::warn!(conversation = %id, jobs = over_queue, "notification queue full; dropped");
    }
    if over_member > 0 {
        tracing::info!(conversation = %id, jobs = over_member, "members' pushes over their limit; dropped");
    }
    let next = NotifyCursor {
        rev: changes
            .messages
            .iter()
            .map(|m| m.rev)
            .max()
            // Nothing read is not "nothing up to `last_rev`": the index may
            // count a message whose row has not landed yet.
            .unwrap_or(cursor.rev)
            .max(cursor.rev),
        last_id: fresh.iter().map(|m| m.id).max().unwrap_or(cursor.last_id),
    };
    Ok(Finish {
        shard,
        mark,
        cursor: next,
        clear: !changes.more,
    })
}

/// The members of `c` who are away, with what presence says of them: most
/// members of a busy conversation are online, and cost nothing more.
async fn away_members(
    ctx: &Ctx,
    c: &Conversation,
) -> Result<HashMap<UserId, Presence>, NotifyError> {
    let members: Vec<UserId> = c.members.iter().map(|m| m.user.clone()).collect();
    Ok(ctx
        .presence
        .query(&members)
        .await?
        .into_iter()
        .filter(|p| p.status == Status::Offline)
        .map(|p| (p.user.clone(), p))
        .collect())
}

/// The push jobs `messages` of `conversation` call for.
async fn jobs_for(
    ctx: &Ctx,
    conversation: &Conversation,
    away: &HashMap<UserId, Presence>,
    messages: &[&Message],
) -> Result<Vec<Job>, NotifyError> {
    let mut known: HashMap<UserId, Known> = HashMap::new();
    let mut jobs = Vec::new();
    let mut digests: HashMap<UserId, Vec<(DigestItem, u64)>> = HashMap::new();
    let ttl_ms = ctx.config.push.ttl().as_millis() as u64;
    for m in messages {
        for (user, p) in away {
            if *user == m.sender {
                continue;
            }
            let k = match known.entry(user.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(Known::read(ctx, user, conversation).await?),
            };
            let member = Member {
                user,
                settings: &k.settings,
                notify: k.notify,
                presence: p,
            };
            let Some(why) = reason(m, conversation.kind, &member) else {
                continue;
            };
            if k.relations.as_ref().is_some_and(|r| r.blocks(&m.sender)) {
                continue;
            }
            if k.mailed {
                let due = m.ts + u64::from(k.settings.email.delay_secs) * 1000;
                digests.entry(user.clone()).or_default().push((
                    DigestItem {
                        conversation: conversation.id.clone(),
                        message: m.id,
                    },
                    due,
                ));
            }
            if !k.settings.push.enabled {
                continue;
            }
            for sub in &k.subscriptions {
                let work = Work::Push {
                    user: user.clone(),
                    subscription: sub.id.clone(),
                    conversation: conversation.id.clone(),
                    message: m.id,
                    urgent: why.urgent(),
                    expires_ms: m.ts + ttl_ms,
                };
                // Due when stored: a member's pushes run in message order.
                jobs.push(Job::new(user.as_str(), m.ts, job_id(), work.encode()));
            }
        }
    }
    // Items first, then their mail's job: a job finding no item is
    // harmless, an item without a job would wait for the next message.
    for (user, items) in digests {
        let due = items.iter().map(|(_, due)| *due).min().unwrap_or(0);
        let items: Vec<DigestItem> = items.into_iter().map(|(i, _)| i).collect();
        ctx.store.add_digest_items(&user, &items).await?;
        let work = Work::Digest { user: user.clone() };
        let id = digest_job_id(&user, due);
        jobs.push(Job::new(user.as_str(), due, id, work.encode()));
    }
    Ok(jobs)
}

fn channel_of(job: &Job) -> &'static str {
    Work::decode(&job.payload).map_or("push", |w| w.channel())
}
