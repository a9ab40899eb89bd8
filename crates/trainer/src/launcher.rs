//! `glassbox train --nproc N`: starts N ranks of the same command on this machine, torchrun-style
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), and supervises them
//! (`docs/distributed.md`, "Launch").
//!
//! Each rank runs in its own process group, so a terminal's Ctrl-C reaches the launcher alone;
//! the launcher forwards one SIGINT to every rank, and the ranks agree to stop after the same
//! update with a checkpoint. When a rank dies, the others stop on their own (their collective
//! fails and names the lost rank); ranks still running `grace` after the first failure are
//! killed, so the launcher never hangs.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use glassbox_distributed::{Launch, free_port};

/// Why a local launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchFailure {
    #[error("cannot start rank {rank} ({program}): {message}")]
    Spawn {
        rank: usize,
        program: String,
        message: String,
    },
    #[error(transparent)]
    Port(#[from] glassbox_distributed::LaunchError),
    #[error("rank {rank} {status}{others}")]
    Rank {
        rank: usize,
        status: String,
        others: String,
    },
}

/// What the launch ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// Every rank exited with status 0.
    Finished,
    /// Interrupted: every rank stopped with a checkpoint (exit status 130).
    Interrupted,
}

/// How [`launch_local`] starts and watches its ranks.
#[derive(Debug, Clone)]
pub struct LocalLaunch {
    pub nproc: usize,
    /// `None`: `MASTER_PORT` if set, else a free port.
    pub master_port: Option<u16>,
    /// How long ranks may outlive the first failed one before they are killed.
    pub grace: Duration,
    /// Set by the caller's Ctrl-C handler; forwarded once to every rank as SIGINT.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Runs `program args` as `nproc` ranks meeting at 127.0.0.1 and waits for them.
pub fn launch_local(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    options: &LocalLaunch,
) -> Result<LaunchOutcome, LaunchFailure> {
    let port = match options.master_port {
        Some(port) => port,
        None => match std::env::var("MASTER_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            Some(port) => port,
            None => free_port("127.0.0.1")?,
        },
    };
    let mut children: Vec<Option<Child>> = Vec::with_capacity(options.nproc);
    for rank in 0..options.nproc {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(Launch::local(rank, options.nproc, port).env())
            .process_group(0);
        match command.spawn() {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                stop_all(&mut children, libc::SIGKILL);
                return Err(LaunchFailure::Spawn {
                    rank,
                    program: program.display().to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; options.nproc];
    let mut first_failure: Option<(usize, Instant)> = None;
    let mut forwarded = false;
    loop {
        if !forwarded
            && options
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
        {
            stop_all(&mut children, libc::SIGINT);
            forwarded = true;
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                statuses[rank] = Some(status);
                *slot = None;
                if !status.success() && first_failure.is_none() && !forwarded {
                    first_failure = Some((rank, Instant::now()));
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if let Some((_, since)) = first_failure
            && since.elapsed() > options.grace
        {
            stop_all(&mut children, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses: Vec<ExitStatus> = statuses.into_iter().flatten().collect();
    if statuses.iter().all(ExitStatus::success) {
        return Ok(LaunchOutcome::Finished);
    }
    if forwarded
        && statuses
            .iter()
            .all(|s| s.success() || s.code() == Some(130))
    {
        return Ok(LaunchOutcome::Interrupted);
    }
    let rank = first_failure.map_or_else(
        || statuses.iter().position(|s| !s.success()).unwrap_or(0),
        |(rank, _)| rank,
    );
    let others: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(r, s)| *r != rank && !s.success())
        .map(|(r, s)| format!("rank {r} {}", describe(s)))
        .collect();
    Err(LaunchFailure::Rank {
        rank,
        status: describe(&statuses[rank]),
        others: if others.is_empty() {
            String::new()
        } else {
            format!(", then {}", others.join(", "))
        },
    })
}

fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

fn stop_all(children: &mut [Option<Child>], signal: i32) {
    for child in children.iter().flatten() {
        // SAFETY: kill(2) on our own child's pid; a pid that already exited yields ESRCH.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
}
