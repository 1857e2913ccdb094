//! `czctl session list`: every session of this user, live or stale.

use std::path::PathBuf;

use super::{places, print_data};
use crate::cli::Output;
use crate::exit::Fatal;
use crate::session::manage;

pub(crate) async fn run(output: Output) -> Result<(), Fatal> {
    let mut sessions = manage::list(&places(PathBuf::from("/etc/hosts")))?;
    crate::intercept::leftovers::mark_expired(&mut sessions).await;
    match output {
        Output::Json | Output::Yaml => {
            print_data(output, &serde_json::json!({ "sessions": sessions }))?
        }
        Output::Text => {
            outln!(
                "{:<12} {:<9} {:<8} {:<8} {:<20} {:<14} WHAT",
                "SESSION",
                "KIND",
                "PID",
                "STATE",
                "STARTED",
                "JOB"
            );
            for s in &sessions {
                let state = if s.stale {
                    "stale".to_string()
                } else {
                    s.record.state.to_string()
                };
                outln!(
                    "{:<12} {:<9} {:<8} {:<8} {:<20} {:<14} {}",
                    s.record.id,
                    s.record.kind,
                    s.record.pid,
                    state,
                    s.record.started,
                    s.record.group.as_deref().unwrap_or("-"),
                    match &s.record.intercept {
                        Some(ic) => format!(
                            "{}/{} {} -> {}",
                            ic.namespace, ic.service, ic.header, ic.local
                        ),
                        None => s.record.namespaces.join(","),
                    }
                );
            }
        }
    }
    Ok(())
}
