//! `czctl session close SESSION|--all`: live sessions are asked to close; what stale ones
//! left is undone by their kind (see [`Kinds`]).

use super::places;
use crate::cli::CloseArgs;
use crate::exit::Fatal;
use crate::session::manage::{self, Places, Which};
use crate::session::process::Liveness;
use crate::session::record::{Record, SessionKind};

pub(crate) async fn run(args: CloseArgs) -> Result<(), Fatal> {
    let which = match args.session {
        Some(id) if !args.all => Which::One(id),
        _ => Which::All {
            group: crate::session::group::current(),
        },
    };
    let closing = manage::close(
        &places(args.hosts_file),
        &which,
        args.force,
        args.forget,
        &mut Kinds::default(),
    )
    .await;
    for line in &closing.said {
        outln!("{line}");
    }
    let mut failed = closing.failed.into_iter();
    let Some(first) = failed.next() else {
        return Ok(());
    };
    let rest: Vec<Fatal> = failed.collect();
    if rest.is_empty() {
        return Err(first);
    }
    let mut message = format!(
        "{} sessions could not be closed:\n- {}",
        rest.len() + 1,
        first.message
    );
    for e in &rest {
        message.push_str(&format!("\n- {}", e.message));
    }
    Err(Fatal::new(first.code, message))
}

/// What each kind of session leaves behind, for `session close`.
#[derive(Default)]
struct Kinds {
    teleport: crate::teleport::leftovers::Leftovers,
}

impl manage::Leftovers for Kinds {
    fn check(&self, places: &Places) -> Result<(), Fatal> {
        self.teleport.check(places)
    }

    async fn clean(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
        force: bool,
    ) -> Result<String, Fatal> {
        match record.kind {
            SessionKind::Teleport => self.teleport.clean(places, record, liveness),
            SessionKind::Intercept => {
                crate::intercept::leftovers::clean(places, record, force).await
            }
        }
    }

    fn forget(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
    ) -> Result<String, Fatal> {
        match record.kind {
            SessionKind::Teleport => self.teleport.forget(places, record, liveness),
            SessionKind::Intercept => Ok(crate::intercept::leftovers::forget(places, record)),
        }
    }

    fn sweep(&mut self, places: &Places, out: &mut manage::Closing) {
        self.teleport.sweep(places, out);
    }
}
