//! What `chat-node admin` does to accounts, with the node stopped (the
//! embedded store is one process's) or running elsewhere (ScyllaDB): make
//! an admin's account, and give or take the admin role. In an embedded
//! cluster a change goes into this node's op log and reaches the others
//! when it next runs.

use std::future::Future;
use std::sync::Arc;

use chat_protocol::{now_ms, UserId};
use chat_storage::replicated::ReplicatedStore;
use chat_storage::{MessageStore, StoreError, UserFlag};

use crate::app::{open_store, NodeError, OpenStore};
use crate::auth::{operator_account, AuthError};
use crate::config::Config;

/// Why an operator's command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The store could not be opened.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The name or the password breaks the rules registration keeps.
    #[error(transparent)]
    Account(#[from] AuthError),
    /// Not a user id at all.
    #[error("user {0:?}: {1}")]
    BadName(String, String),
    /// The account to change does not exist.
    #[error(
        "no user {0:?} (register it first, or make it an admin's account with \
         `chat-node admin create-user {0}`)"
    )]
    NoSuchUser(String),
    /// The account to make exists already.
    #[error("user {0} exists already: make it an admin with `chat-node admin grant {0}`")]
    Exists(UserId),
}

/// Runs `f` on the node's store as the node would write it, then closes it.
async fn with_store<T, F, Fut>(config: &Config, f: F) -> Result<T, OperatorError>
where
    F: FnOnce(Arc<dyn MessageStore>) -> Fut,
    Fut: Future<Output = Result<T, OperatorError>>,
{
    let store = open_store(config).await?;
    let result = async {
        let data: Arc<dyn MessageStore> = match (&store, config.cluster.listen.is_some()) {
            (OpenStore::Embedded(local), true) => Arc::new(ReplicatedStore::new(
                local.clone(),
                config.node.name.as_str(),
            )?),
            _ => store.shared(),
        };
        f(data).await
    }
    .await;
    store.close().await;
    result
}

/// Gives or takes the admin role of the existing account `user`.
pub async fn set_admin(config: &Config, user: &str, on: bool) -> Result<(), OperatorError> {
    let id =
        UserId::new(user).map_err(|e| OperatorError::BadName(user.to_owned(), e.to_string()))?;
    with_store(config, |data| async move {
        if data.user(&id).await?.is_none() {
            return Err(OperatorError::NoSuchUser(id.to_string()));
        }
        data.set_user_flag(&id, UserFlag::Admin, on, now_ms())
            .await?;
        Ok(())
    })
    .await
}

/// Makes the account `name` with `password`, an admin: how the account of
/// an admin named in `[admin] users` comes to be, since registration
/// refuses those names. Returns its id (the name in lower case).
pub async fn create_admin(
    config: &Config,
    name: &str,
    password: &str,
) -> Result<UserId, OperatorError> {
    let record = operator_account(name, password)?;
    with_store(config, |data| async move {
        match data.create_user(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(OperatorError::Exists(record.id)),
            Err(e) => return Err(e.into()),
        }
        data.set_user_flag(&record.id, UserFlag::Admin, true, now_ms())
            .await?;
        Ok(record.id)
    })
    .await
}
