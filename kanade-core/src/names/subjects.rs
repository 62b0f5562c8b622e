//! Subject builders for every message kanade sends.
//!
//! Builders take [`SubjectToken`]s, so a value that would split or widen a
//! subject cannot reach one.

use super::SubjectToken;

/// Commands for every agent.
pub const COMMANDS_ALL: &str = "commands.all";
/// Everything the EXEC stream captures.
pub const COMMANDS_FILTER: &str = "commands.>";
/// Everything the RESULTS stream captures.
pub const RESULTS_FILTER: &str = "results.>";
/// Everything the EVENTS stream captures.
pub const EVENTS_FILTER: &str = "events.>";
/// Everything the AUDIT stream captures.
pub const AUDIT_FILTER: &str = "audit.>";
/// Everything the OBS_EVENTS stream captures.
pub const OBS_FILTER: &str = "obs.>";
/// Everything the INVENTORY stream captures.
pub const INVENTORY_FILTER: &str = "inventory.>";
/// Every heartbeat.
pub const HEARTBEAT_FILTER: &str = "heartbeat.*";

/// `commands.group.<g>`: commands for one group.
pub fn commands_group(group: &SubjectToken) -> String {
    format!("commands.group.{group}")
}

/// `commands.pc.<pc>`: commands for one pc.
pub fn commands_pc(pc: &SubjectToken) -> String {
    format!("commands.pc.{pc}")
}

/// `results.<request_id>`: results of one request.
pub fn results(request_id: &SubjectToken) -> String {
    format!("results.{request_id}")
}

/// `heartbeat.<pc>`.
pub fn heartbeat(pc: &SubjectToken) -> String {
    format!("heartbeat.{pc}")
}

/// `agents.<pc>.ping`: request / reply, answered with a heartbeat.
pub fn ping(pc: &SubjectToken) -> String {
    format!("agents.{pc}.ping")
}

/// `events.started.<exec_id>.<pc>`.
pub fn events_started(exec_id: &SubjectToken, pc: &SubjectToken) -> String {
    format!("events.started.{exec_id}.{pc}")
}

/// `kill.<exec_id>`: terminate that execution's running processes.
pub fn kill(exec_id: &SubjectToken) -> String {
    format!("kill.{exec_id}")
}

/// `_INBOX_<pc>`: the reply-subject prefix of pc `pc`'s own connection
/// (NATS clients default to a shared `_INBOX`). A pc id is one subject
/// token, so the prefix is one too.
pub fn agent_inbox_prefix(pc: &SubjectToken) -> String {
    format!("_INBOX_{pc}")
}

/// `obs.<pc>`.
pub fn obs(pc: &SubjectToken) -> String {
    format!("obs.{pc}")
}

/// Which inventory report a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InventoryKind {
    /// Hardware and OS.
    Hw,
    /// Installed software.
    Sw,
    /// Network interfaces.
    Net,
}

impl InventoryKind {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryKind::Hw => "hw",
            InventoryKind::Sw => "sw",
            InventoryKind::Net => "net",
        }
    }
}

/// `inventory.<pc>.<hw|sw|net>`.
pub fn inventory(pc: &SubjectToken, kind: InventoryKind) -> String {
    format!("inventory.{pc}.{}", kind.as_str())
}

/// `alerts.<check>.<pc>`: a pc entered an alerting state of a check.
pub fn alert(check: &SubjectToken, pc: &SubjectToken) -> String {
    format!("alerts.{check}.{pc}")
}

/// Every alert.
pub const ALERTS_FILTER: &str = "alerts.>";

/// `audit.<actor>.<action>[.<target>]`.
pub fn audit(actor: &SubjectToken, action: &SubjectToken, target: Option<&SubjectToken>) -> String {
    match target {
        Some(target) => format!("audit.{actor}.{action}.{target}"),
        None => format!("audit.{actor}.{action}"),
    }
}

/// The command subjects one agent listens to: `commands.all`, its pc subject
/// and one per group.
pub fn agent_command_filters(pc: &SubjectToken, groups: &[SubjectToken]) -> Vec<String> {
    let mut filters = Vec::with_capacity(groups.len() + 2);
    filters.push(COMMANDS_ALL.to_owned());
    filters.push(commands_pc(pc));
    filters.extend(groups.iter().map(commands_group));
    filters
}

/// The object key of overflowed output: `<request_id>/<pc_id>/stdout|stderr`.
pub fn result_output_key(
    request_id: &SubjectToken,
    pc: &SubjectToken,
    stream: OutputStream,
) -> String {
    format!("{request_id}/{pc}/{}", stream.as_str())
}

/// One of a child's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}
