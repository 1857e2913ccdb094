//! `czctl status [SESSION]`: what live sessions forward, asked through their control sockets.

use std::path::PathBuf;

use super::{places, print_data};
use crate::cli::{Output, StatusArgs};
use crate::exit::Fatal;
use crate::session::manage;

pub(crate) async fn run(args: StatusArgs) -> Result<(), Fatal> {
    let found = manage::status(
        &places(PathBuf::from("/etc/hosts")),
        args.session.as_deref(),
    )
    .await?;
    match args.output {
        Output::Json | Output::Yaml => {
            let sessions: Vec<serde_json::Value> = found
                .iter()
                .map(|(record, status)| {
                    serde_json::json!({
                        "session": record,
                        "forwards": status.forwards,
                        "notes": status.notes,
                        "protocol": status.protocol,
                    })
                })
                .collect();
            print_data(args.output, &serde_json::json!({ "sessions": sessions }))?;
        }
        Output::Text => {
            if found.is_empty() {
                eprintln!("czctl: no running sessions");
            }
            for (record, status) in &found {
                outln!(
                    "session {} ({} {}, pid {}, context {}, since {})",
                    record.id,
                    record.kind,
                    record.namespaces.join(","),
                    record.pid,
                    record.context,
                    record.started
                );
                out!("{}", crate::session::status::render(status));
            }
        }
    }
    Ok(())
}
