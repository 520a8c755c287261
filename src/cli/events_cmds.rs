//! `adaptd events list|show`: the stored tracked objects, read beside a running daemon (the
//! store is opened read-only; WAL lets both go on).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{Context, Format};
use crate::events::{EventStore, Query};
use crate::wire::TrackedObject;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// The daemon's state dir (default: the config's `state_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: EventsCmd,
}

#[derive(Debug, Subcommand)]
enum EventsCmd {
    /// Stored objects, newest first.
    List {
        #[arg(long)]
        camera: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        sub_label: Option<String>,
        /// Only objects that started in the last this many hours.
        #[arg(long, value_name = "HOURS")]
        since_hours: Option<f64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One object, as JSON.
    Show { id: String },
}

pub fn run(ctx: &Context, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .state_dir
        .clone()
        .or_else(|| ctx.config.state_dir.clone())
        .unwrap_or_else(crate::config::default_state_dir);
    let store = EventStore::open_read(&EventStore::path_in(&dir))?;
    match &args.cmd {
        EventsCmd::List {
            camera,
            label,
            sub_label,
            since_hours,
            limit,
            format,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let events = store.list(&Query {
                camera: camera.clone(),
                label: label.clone(),
                sub_label: sub_label.clone(),
                after: since_hours.map(|h| now - h * 3600.0),
                before: None,
                zone: None,
                limit: *limit,
            })?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&events)?),
                Format::Text => print!("{}", render(&events)),
            }
        }
        EventsCmd::Show { id } => {
            let o = store.get(id)?.with_context(|| {
                format!("no stored object {id:?}; `adaptd events list` shows the ids")
            })?;
            println!("{}", serde_json::to_string_pretty(&o)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per object: when, where, what, for how long.
fn render(events: &[TrackedObject]) -> String {
    if events.is_empty() {
        return "no objects stored (yet)\n".into();
    }
    let mut out = format!(
        "{:<24} {:<12} {:<10} {:<14} {:>6} {:>8}  {}\n",
        "ID", "CAMERA", "LABEL", "SUB-LABEL", "TOP", "SECONDS", "STARTED (UTC)"
    );
    for o in events {
        let sub = o
            .sub_label
            .as_ref()
            .map_or("-".to_owned(), |(n, s)| format!("{n} {s:.2}"));
        let secs = o
            .end_time
            .map_or("live".to_owned(), |e| format!("{:.1}", e - o.start_time));
        out.push_str(&format!(
            "{:<24} {:<12} {:<10} {:<14} {:>6.2} {:>8}  {}\n",
            o.id,
            o.camera,
            o.label,
            sub,
            o.top_score,
            secs,
            utc(o.start_time)
        ));
    }
    out
}

/// `2026-12-07 10:15:02` from unix seconds.
fn utc(t: f64) -> String {
    let [y, m, d, hh, mm, ss] = crate::logtail::civil(t.max(0.0) as i64);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_rows_render() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_987_200.5), "2026-11-29 21:20:00");
        let o = TrackedObject {
            id: "1795987200.456-abcdef".into(),
            camera: "front".into(),
            label: "person".into(),
            top_score: 0.81,
            sub_label: Some(("alice".into(), 0.9)),
            start_time: 1_795_987_200.456,
            end_time: Some(1_795_987_212.956),
            ..TrackedObject::default()
        };
        let text = render(&[o]);
        assert!(
            text.contains("alice 0.90") && text.contains("12.5"),
            "{text}"
        );
        assert_eq!(render(&[]), "no objects stored (yet)\n");
    }
}
