//! Stage two of the outbox: due jobs run, then go (done, or nothing left to
//! do), come back later (a push service asked to wait), or are given up.
//! A job is deleted only after its push went out, so a node dying mid-way
//! leaves it for the next worker of its shard: a duplicate at worst, with
//! the same message id.

use std::time::Duration;

use chat_protocol::now_ms;
use chat_storage::{DeadJob, Job};
use futures_util::stream::{self, StreamExt};

use crate::jobs::Work;
use crate::push_job::{Memo, PushJob};
use crate::webhooks::WEBHOOK_ATTEMPTS;
use crate::{mail_jobs, Ctx, NotifyError};

/// Jobs read per shard per pass.
const JOBS_PER_PASS: usize = 256;
/// Members whose jobs run at once per shard.
const CONCURRENCY: usize = 16;
/// Attempts at a mail before it is given up (about 1.5 h of retries).
const MAIL_ATTEMPTS: u32 = 20;

/// Runs what is due in `shard`; how many jobs it finished. Jobs of one
/// key (a member) run one after the other, in due order, so that a browser
/// gets a conversation's pushes in the order of its messages; different
/// members' run at once.
pub(crate) async fn run_due(ctx: &Ctx, shard: u32) -> Result<usize, NotifyError> {
    let jobs = ctx.store.due_jobs(shard, now_ms(), JOBS_PER_PASS).await?;
    let n = jobs.len();
    let mut by_key: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match by_key.iter_mut().find(|g| g[0].key == job.key) {
            Some(group) => group.push(job),
            None => by_key.push(vec![job]),
        }
    }
    let results: Vec<(Vec<Finished>, Option<NotifyError>)> = stream::iter(by_key)
        .map(|mut group| async move {
            // Pushes of one millisecond come out by message id.
            group.sort_by_cached_key(|j| {
                (j.due_ms, Work::decode(&j.payload).map_or(0, |w| w.order()))
            });
            let mut memo = Memo::default();
            let mut finished = Vec::with_capacity(group.len());
            for job in group {
                match run_one(ctx, job, &mut memo).await {
                    Ok(f) => finished.push(f),
                    // The rest of this member's jobs wait for the next pass.
                    Err(e) => return (finished, Some(e)),
                }
            }
            (finished, None)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    // What went out leaves the store in one write: a crash before it sends
    // those again, with the same ids.
    let mut first_error = None;
    let mut finished = Vec::new();
    for (f, e) in results {
        finished.extend(f);
        first_error = first_error.or(e);
    }
    let jobs: Vec<Job> = finished.iter().map(|f| f.job.clone()).collect();
    ctx.store.delete_jobs(&jobs).await?;
    for f in &finished {
        if !f.requeued {
            ctx.admission.release(&f.job, f.push);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// A job that ran: to delete, and whether it left the outbox's counts
/// (a retry replaced it with a later one, which still counts).
struct Finished {
    job: Job,
    requeued: bool,
    push: bool,
}

/// What to do with a job after it ran.
pub(crate) enum After {
    /// It is done (sent, or nothing is left to do).
    Done,
    /// Part of it is done: run it again at once (not a failure).
    Again,
    /// Try again after this long.
    Retry(Duration, String),
    /// Give it up.
    Drop(String),
    /// Keep it as a dead letter, for an operator to replay.
    Dead(String),
}

/// Tries of an index job before it is given up.
const INDEX_ATTEMPTS: u32 = 30;

async fn run_one(ctx: &Ctx, job: Job, memo: &mut Memo) -> Result<Finished, NotifyError> {
    let work = match Work::decode(&job.payload) {
        Ok(w) => w,
        Err(e) => {
            // Written by a newer build, or damaged: not this build's to do.
            tracing::warn!(job = job.id, error = %e, "unreadable notification job dropped");
            return Ok(Finished {
                job,
                requeued: false,
                push: false,
            });
        }
    };
    let channel = work.channel();
    let after = match &work {
        Work::Push {
            user,
            subscription,
            conversation,
            message,
            urgent,
            expires_ms,
        } => {
            let push = PushJob {
                user,
                subscription,
                conversation,
                message: *message,
                urgent: *urgent,
                expires_ms: *expires_ms,
                attempts: job.attempts,
            };
            push.run(ctx, memo).await?
        }
        Work::Digest { user } => mail_jobs::digest(ctx, user, job.attempts).await?,
        Work::VerifyEmail { user, address } => {
            mail_jobs::verify(ctx, user, address, job.attempts).await?
        }
        Work::ResetPassword { address } => {
            mail_jobs::reset_password(ctx, address, job.attempts).await?
        }
        Work::Webhook {
            hook,
            event,
            delivery,
            body,
        } => match ctx.webhooks.deliver(hook, event, delivery, body).await {
            Ok(()) => {
                ctx.metrics.counted(&ctx.metrics.sent, "webhook", 1);
                After::Done
            }
            Err(why) if job.attempts + 1 >= WEBHOOK_ATTEMPTS => After::Dead(why),
            Err(why) => After::Retry(backoff(ctx, job.attempts, None), why),
        },
        Work::Index { conversation } => match &ctx.indexer {
            None => After::Drop("search is off".into()),
            Some(indexer) => match indexer.index(conversation).await {
                Ok(false) => After::Done,
                Ok(true) => After::Again,
                Err(why) => After::Retry(backoff(ctx, job.attempts, None), why),
            },
        },
    };
    let m = &ctx.metrics;
    // A retry replaces the job with a later one: it still counts.
    let mut requeued = false;
    match after {
        After::Done => {}
        After::Again => {
            let next = Job {
                due_ms: now_ms(),
                ..job.clone()
            };
            ctx.store.put_jobs(&[next]).await?;
            requeued = true;
        }
        After::Retry(delay, why) => {
            m.counted(&m.failed, channel, 1);
            let due = now_ms() + delay.as_millis() as u64;
            if gives_up(&work, due, job.attempts + 1) {
                m.counted(&m.dropped, channel, 1);
                tracing::info!(job = job.id, %why, "notification given up after retries");
            } else {
                let next = Job {
                    due_ms: due,
                    attempts: job.attempts + 1,
                    ..job.clone()
                };
                ctx.store.put_jobs(&[next]).await?;
                requeued = true;
            }
        }
        After::Drop(why) => {
            m.counted(&m.dropped, channel, 1);
            tracing::info!(job = job.id, %why, "notification given up");
        }
        After::Dead(why) => {
            m.counted(&m.failed, channel, 1);
            m.counted(&m.dead, channel, 1);
            tracing::warn!(job = job.id, %why, "webhook delivery given up: kept as a dead letter");
            let dead = DeadJob {
                job: Job {
                    attempts: job.attempts + 1,
                    ..job.clone()
                },
                failed_at: now_ms(),
                error: why,
            };
            ctx.store.put_dead_job(&dead).await?;
        }
    }
    Ok(Finished {
        job,
        requeued,
        push: channel == "push",
    })
}

/// Whether a retry due at `due` (its `attempts`th) is one too many: a
/// push past its TTL, a mail after [`MAIL_ATTEMPTS`].
fn gives_up(work: &Work, due: u64, attempts: u32) -> bool {
    match work {
        Work::Push { expires_ms, .. } => due >= *expires_ms,
        Work::Digest { .. } | Work::VerifyEmail { .. } | Work::ResetPassword { .. } => {
            attempts >= MAIL_ATTEMPTS
        }
        // Dead letters rather than given up: see `run_one`.
        Work::Webhook { .. } => false,
        // The conversation's next change queues another; a rebuild
        // (`chat-node reindex`) catches up whatever was given up.
        Work::Index { .. } => attempts >= INDEX_ATTEMPTS,
    }
}

/// A retry's delay after `attempts` failures: `[notifications]
/// retry_base_ms` (1 s) doubling to 5 minutes, or what the service asked
/// for when longer.
pub(crate) fn backoff(ctx: &Ctx, attempts: u32, asked: Option<Duration>) -> Duration {
    let base = Duration::from_millis(ctx.config.retry_base_ms.max(1));
    let most = Duration::from_secs(300);
    let doubling = base
        .checked_mul(1u32 << attempts.min(16))
        .map_or(most, |d| d.min(most));
    asked.map_or(doubling, |a| a.max(doubling))
}
