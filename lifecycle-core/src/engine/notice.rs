//! What the engine hears while it runs, from handles and tracked tasks.

use std::sync::Arc;

use crate::report::Outcome;
use crate::task::TaskSet;

/// What the engine hears from handles and tracked tasks while it runs.
#[derive(Debug)]
pub(crate) enum Notice {
    Requested,
    /// [`ReloadHandle::reload`](crate::ReloadHandle::reload).
    Reload,
    /// A tracked task of `node` failed; `tasks` names the incarnation it belonged to.
    TaskFailed {
        node: usize,
        tasks: Arc<TaskSet>,
        outcome: Outcome,
    },
    /// A task spawned by the start of `node` itself ended (for [`Restart::always`](crate::Restart::always)).
    TaskEnded {
        node: usize,
        tasks: Arc<TaskSet>,
    },
}
