//! A confab in a child process of its own (this binary's hidden `--serve IP` mode), for the
//! scenarios that need the server's own RSS (density) or its own network namespace (lossy):
//! started, its addresses read from its `READY` line, and stopped on drop by closing its stdin.
//! Also the helpers for the other programs the scenarios run (`taskset`, `ip`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct ChildServer {
    child: Child,
    pub(crate) http: String,
    pub(crate) h3: String,
    pub(crate) hash: String,
    /// How long a stop waits for the child to end by itself before killing it: a server under
    /// a profiler writes its report at exit, which takes far longer than a plain one's drain.
    pub(crate) patience: Duration,
}

impl ChildServer {
    /// Runs `wrapper` (e.g. `ip netns exec NS`, or nothing) followed by this binary `--serve ip`.
    pub(crate) fn start(wrapper: &[&str], ip: &str, threads: usize) -> Result<Self, String> {
        Self::start_with_env(wrapper, ip, threads, &[])
    }

    /// The same, with these environment variables set for the server (`CONFAB_SYNC`, ...).
    pub(crate) fn start_with_env(
        wrapper: &[&str],
        ip: &str,
        threads: usize,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = wrapped(wrapper, exe.as_os_str())
            .args(["--serve", ip, "--server-threads", &threads.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let read = first_line(&mut child);
        let mut server = Self {
            child,
            http: String::new(),
            h3: String::new(),
            hash: String::new(),
            patience: Duration::from_secs(20),
        };
        let line = read?;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                server.http = v.to_string();
            } else if let Some(v) = part.strip_prefix("h3=") {
                server.h3 = v.to_string();
            } else if let Some(v) = part.strip_prefix("hash=") {
                server.hash = v.to_string();
            }
        }
        if server.http.is_empty() || server.h3.is_empty() {
            return Err(format!("the child server said {line:?}"));
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        stop(&mut self.child, self.patience);
    }
}

/// Runs `args` (a program and its arguments) to its end; its standard error is the error.
pub(crate) fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `program` run by `wrapper` (`taskset -c N`, `ip netns exec NS`, ...), or alone.
pub(crate) fn wrapped(wrapper: &[&str], program: &std::ffi::OsStr) -> Command {
    match wrapper.split_first() {
        Some((first, args)) => {
            let mut c = Command::new(first);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The first line a child prints on its stdout (its `READY ...` line).
pub(crate) fn first_line(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line)
}

/// Stops a child that ends when its stdin closes: closes it, waits up to `within`, then kills.
pub(crate) fn stop(child: &mut Child, within: Duration) {
    drop(child.stdin.take());
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child server's CPU time from a starting point on, per message handled since.
pub(crate) struct CpuMeter {
    pid: u32,
    start: Option<u64>,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> Self {
        Self { pid, start: cpu_us(pid) }
    }

    /// The server's CPU µs since [`CpuMeter::start`], per one of `messages`.
    pub(crate) fn per(&self, messages: u64) -> Option<f64> {
        let spent = cpu_us(self.pid)?.saturating_sub(self.start?);
        Some(spent as f64 / messages.max(1) as f64)
    }
}

/// The CPU time of every process with one command name (`postgres`: the postmaster and its
/// backends), counting those that start meanwhile from zero.
pub(crate) struct NamedCpuMeter {
    name: &'static str,
    start: std::collections::HashMap<u32, u64>,
}

impl NamedCpuMeter {
    pub(crate) fn start(name: &'static str) -> Self {
        Self { name, start: named_pids(name).into_iter().filter_map(|p| Some((p, cpu_us(p)?))).collect() }
    }

    /// Their CPU µs since [`NamedCpuMeter::start`], per one of `messages`.
    pub(crate) fn per(&self, messages: u64) -> f64 {
        let spent: u64 = named_pids(self.name)
            .into_iter()
            .filter_map(|p| Some(cpu_us(p)?.saturating_sub(self.start.get(&p).copied().unwrap_or(0))))
            .sum();
        spent as f64 / messages.max(1) as f64
    }
}

fn named_pids(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == name))
        .collect()
}

/// The server's CPU time so far (user + system, all threads, dead ones too), in µs.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports clock ticks of USER_HZ, 100 on Linux.
    Some(ticks * 10_000)
}
